import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import type { TestContext } from './helper.js'

/** dist/server.js, next to this compiled file's parent directory. */
const SERVER = join(dirname(fileURLToPath(import.meta.url)), '..', 'server.js')

export interface ServerProcess {
  proc: ChildProcess
  url: string
  wsUrl: string
  /** Every JSON log line so far. */
  logs: () => Array<Record<string, unknown>>
  /** Resolves with the exit code (or the signal's name) once the process is gone. */
  exited: Promise<number | string>
}

/**
 * Runs the built server (`node dist/server.js`) as a child process on a free
 * port with `env`, and resolves once it listens. Killed at teardown if still alive.
 */
export async function startServer (t: TestContext, env: Record<string, string>): Promise<ServerProcess> {
  const proc = spawn(process.execPath, [SERVER], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  let err = ''
  proc.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  proc.stderr?.on('data', (c: Buffer) => { err += c.toString() })
  const exited = new Promise<number | string>(resolve => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    await exited
  })
  const logs = () => out.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as Record<string, unknown>)

  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start; stdout: ${out.slice(-2000)} stderr: ${err.slice(-2000)}`)), 15000)
    const look = () => {
      const line = logs().find(l => typeof l.msg === 'string' && l.msg.startsWith('Server listening at http://127.0.0.1:'))
      if (line) {
        clearTimeout(timer)
        proc.stdout?.off('data', look)
        resolve((line.msg as string).slice('Server listening at '.length))
      }
    }
    proc.stdout?.on('data', look)
    exited.then(code => {
      clearTimeout(timer)
      reject(new Error(`server exited with ${code} before listening; stdout: ${out.slice(-2000)} stderr: ${err.slice(-2000)}`))
    }, reject)
  })
  return { proc, url, wsUrl: url.replace(/^http/, 'ws') + '/ws', logs, exited }
}

/** Runs the built server expecting it to refuse to start; resolves with its exit code and output. */
export async function runUntilExit (env: Record<string, string>, timeoutMs = 15000): Promise<{ code: number | string, output: string }> {
  const proc = spawn(process.execPath, [SERVER], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  proc.stdout?.on('data', (c: Buffer) => { output += c.toString() })
  proc.stderr?.on('data', (c: Buffer) => { output += c.toString() })
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | string>(resolve => proc.once('exit', (c, s) => resolve(c ?? s ?? -1)))
  clearTimeout(timer)
  return { code, output }
}
