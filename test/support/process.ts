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

/**
 * `command args` as a spawn command line that runs it without the test
 * runner's hook. tap adds its process-info `--import` to the NODE_OPTIONS of
 * every child it sees spawned, even one given an explicit `env`, and that hook
 * doubles the CPU a Node process spends loading modules: about 1.3 s more per
 * server start, hundreds of times per suite. What runs here is the product
 * under test, not a test file: `env -u NODE_OPTIONS` drops the hook and then
 * execs the command, so the pid, signals and exit code are the command's own.
 */
export function withoutRunnerHook (command: string, args: readonly string[]): [string, string[]] {
  return ['env', ['-u', 'NODE_OPTIONS', command, ...args]]
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
 * process and resolves once it logs `server.listening`, or rejects when it exits
 * first. There is no start deadline: a loaded machine may take long to start
 * Node, and a server that never starts is caught by the test's own timeout.
 * Killed at teardown.
 */
export async function startServer (t: TestContext, env: Record<string, string>, opts: { args?: string[], command?: string, readyPattern?: RegExp } = {}): Promise<ServerProcess> {
  const proc = spawn(...withoutRunnerHook(opts.command ?? process.execPath, opts.args ?? [join(root, 'dist', 'server.js')]), {
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
    const check = () => {
      const m = ready.exec(out)
      if (m) {
        proc.stdout!.off('data', check)
        resolve(Number(m[1]))
      }
    }
    proc.stdout!.on('data', check)
    exited.then(({ code, signal }) => reject(new Error(`server exited with ${code ?? signal} before listening: ${out}${err}`)))
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

/**
 * Runs the built server (or `args`) expecting it to refuse to start; resolves
 * with its exit code and output once it exits. A process that does not exit is
 * killed at teardown (the test's own timeout ends the wait).
 */
export async function runUntilExit (t: TestContext, env: Record<string, string>, opts: { args?: string[], command?: string, cwd?: string } = {}): Promise<{ code: number | null, output: string, stderr: string }> {
  const proc = spawn(...withoutRunnerHook(opts.command ?? process.execPath, opts.args ?? [join(root, 'dist', 'server.js')]), {
    cwd: opts.cwd,
    env: { PATH: process.env.PATH ?? '', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  let stderr = ''
  proc.stdout!.on('data', (c: Buffer) => { output += c.toString() })
  proc.stderr!.on('data', (c: Buffer) => { output += c.toString(); stderr += c.toString() })
  const exited = new Promise<number | null>(resolve => proc.once('exit', c => resolve(c)))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  return { code: await exited, output, stderr }
}
