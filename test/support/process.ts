import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import type { TestContext } from './helper.js'

/** The project root (tests run from dist/test). */
export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

export interface ServerProcess {
  proc: ChildProcess
  port: number
  url: string
  wsUrl: string
  /** stdout so far (pino JSON lines). */
  stdout: () => string
  stderr: () => string
  /** Parsed JSON log lines so far. */
  logs: () => Array<Record<string, any>>
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/** A port that was free a moment ago (for servers that must come back on the same port). */
export async function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      const port = typeof address === 'object' && address ? address.port : 0
      srv.close(() => resolve(port))
    })
    srv.once('error', reject)
  })
}

/**
 * Runs the built server (`node dist/server.js`, or another command) as a child
 * process and resolves once it logs `server.listening`. Killed at teardown.
 */
export async function startServer (t: TestContext, env: Record<string, string>, opts: { args?: string[], command?: string, readyPattern?: RegExp, startTimeoutMs?: number } = {}): Promise<ServerProcess> {
  const proc = spawn(opts.command ?? process.execPath, opts.args ?? [join(root, 'dist', 'server.js')], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  let err = ''
  proc.stdout!.on('data', (c: Buffer) => { out += c.toString() })
  proc.stderr!.on('data', (c: Buffer) => { err += c.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => proc.once('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  const ready = opts.readyPattern ?? /"event":"server\.listening"[^\n]*"port":(\d+)/
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}${err}`)), opts.startTimeoutMs ?? 15000)
    const check = () => {
      const m = ready.exec(out)
      if (m) {
        clearTimeout(timer)
        proc.stdout!.off('data', check)
        resolve(Number(m[1]))
      }
    }
    proc.stdout!.on('data', check)
    exited.then(({ code }) => { clearTimeout(timer); reject(new Error(`server exited with ${code} before listening: ${out}${err}`)) })
  })
  return {
    proc,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    stdout: () => out,
    stderr: () => err,
    logs: () => out.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l)),
    exited
  }
}

/** Runs the built server (or `args`) expecting it to refuse to start; resolves with its exit code and output. */
export async function runUntilExit (env: Record<string, string>, timeoutMs = 15000, opts: { args?: string[], cwd?: string } = {}): Promise<{ code: number | null, output: string, stderr: string }> {
  const proc = spawn(process.execPath, opts.args ?? [join(root, 'dist', 'server.js')], {
    cwd: opts.cwd,
    env: { PATH: process.env.PATH ?? '', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  let stderr = ''
  proc.stdout!.on('data', (c: Buffer) => { output += c.toString() })
  proc.stderr!.on('data', (c: Buffer) => { output += c.toString(); stderr += c.toString() })
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | null>(resolve => proc.once('exit', c => resolve(c)))
  clearTimeout(timer)
  return { code, output, stderr }
}
