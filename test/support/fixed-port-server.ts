import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { TestContext } from './helper.js'
import { freePort, withoutRunnerHook } from './process.js'

export { freePort }

const serverJs = fileURLToPath(new URL('../../server.js', import.meta.url))

export interface PortServer {
  child: ChildProcess
  url: string
  wsUrl: string
  /** Every stdout line (pino JSON) so far. */
  output: string[]
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>
  /** Sends a signal and waits for the exit. */
  stop (signal?: NodeJS.Signals): Promise<number | string>
}

/**
 * Runs the built server (`node dist/server.js`) on `port` with `env`, resolves
 * once it logs `server.listening`, and kills it at teardown if still running.
 */
export async function startServerOnPort (t: TestContext, port: number, env: Record<string, string>): Promise<PortServer> {
  const child = spawn(...withoutRunnerHook(process.execPath, [serverJs]), {
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', SHUTDOWN_GRACE_MS: '5000', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const output: string[] = []
  let stderr = ''
  const exited = new Promise<number | string>(resolve => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  await new Promise<void>((resolve, reject) => {
    let buffered = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split('\n')
      buffered = lines.pop() ?? ''
      for (const line of lines) {
        output.push(line)
        if (line.includes('"server.listening"')) resolve()
      }
    })
    child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    exited.then(code => reject(new Error(`server exited with ${code} before listening; stderr: ${stderr}; last log lines: ${output.slice(-3).join('\n')}`)), reject)
  })
  return {
    child,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    output,
    exited,
    async stop (signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return exited
      child.kill(signal)
      return exited
    }
  }
}
