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

/**
 * Ports handed out for servers that must come back on the same port. They
 * lie below the kernel's ephemeral range (32768-60999 by default): a port
 * from that range, free while the server is down for a restart, can be taken
 * meanwhile as the source port of any outgoing connection on the machine
 * (another test's client, redis-cli), and the restarted server then fails
 * with EADDRINUSE. Nothing takes a port from below the range unless asked.
 */
const FIXED_PORTS = { from: 20000, to: 32000 }

function tryListen (port: number): Promise<boolean> {
  return new Promise(resolve => {
    const srv = createServer()
    srv.once('error', () => resolve(false))
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)))
  })
}

/** A port that was free a moment ago, outside the ephemeral range (FIXED_PORTS). */
export async function freePort (): Promise<number> {
  for (;;) {
    const port = FIXED_PORTS.from + Math.floor(Math.random() * (FIXED_PORTS.to - FIXED_PORTS.from))
    if (await tryListen(port)) return port
  }
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
