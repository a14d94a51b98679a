/**
 * The Switchboard server (dist/server.js) as a child process for the
 * one-server benchmarks (bench:pusher, bench:sse): limits lifted far above
 * the load, its own data directory, ready once it logs `server.listening`.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface BenchServer { port: number, pid: number, dataDir: string, stop: () => void }

export async function startBenchServer (name: string, env: Record<string, string> = {}): Promise<BenchServer> {
  const dataDir = mkdtempSync(join(tmpdir(), `switchboard-bench-${name}-`))
  const server = fileURLToPath(new URL('../server.js', import.meta.url))
  const child = spawn(process.execPath, [server], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'info',
      DATA_DIR: dataDir,
      MAX_CONNECTIONS: '30000',
      MAX_CONNECTIONS_PER_CLIENT: '30000',
      MAX_PENDING_CONNECTIONS: '30000',
      MAX_PENDING_CONNECTIONS_PER_CLIENT: '30000',
      RATE_LIMIT_MAX: '100000000',
      ...env
    },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const port = await new Promise<number>((resolve, reject) => {
    let buf = ''
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString()
      const m = /"event":"server.listening"[^\n]*"port":(\d+)/.exec(buf)
      if (m) resolve(Number(m[1]))
    })
    child.once('exit', code => reject(new Error(`server exited ${code}`)))
  })
  child.stdout!.resume()
  return { port, pid: child.pid!, dataDir, stop: () => { child.kill('SIGTERM'); rmSync(dataDir, { recursive: true, force: true }) } }
}
