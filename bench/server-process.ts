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

export interface BenchServer {
  port: number
  pid: number
  dataDir: string
  /** The server's warnings and errors so far (pino level ≥ 40), counted by their `event`. */
  warnings: () => Record<string, number>
  stop: () => void
}

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
  // the rest of its log is read only for warnings and errors: a benchmark says what the server complained of
  const warnings: Record<string, number> = {}
  let rest = ''
  child.stdout!.removeAllListeners('data')
  child.stdout!.on('data', (c: Buffer) => {
    const lines = (rest + c.toString()).split('\n')
    rest = lines.pop() ?? ''
    for (const line of lines) {
      if (!/"level":[4-6]\d/.test(line)) continue
      let event = 'unparsed'
      try { event = String(JSON.parse(line).event ?? 'no event') } catch {}
      warnings[event] = (warnings[event] ?? 0) + 1
    }
  })
  return { port, pid: child.pid!, dataDir, warnings: () => ({ ...warnings }), stop: () => { child.kill('SIGTERM'); rmSync(dataDir, { recursive: true, force: true }) } }
}
