import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createConnection } from 'node:net'
import { freePort } from './process.js'
import { tempDir, type TestContext } from './helper.js'
import { prerequisiteOptions } from './prerequisites.js'

/** True when a redis-server binary is on PATH. */
export const haveRedis = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0

/**
 * Options for a tap test that needs redis-server: skipped with a loud reason when
 * it is missing, except under REQUIRE_REDIS=1 (CI), where the test runs and fails.
 */
export function redisTestOptions (): { skip?: string } {
  return prerequisiteOptions({
    present: haveRedis,
    missing: 'redis-server is not installed',
    tests: 'the Redis tests',
    install: 'apt-get install redis-server',
    requireVar: 'REQUIRE_REDIS'
  })
}

export interface RedisServer {
  port: number
  url: string
  dir: string
  /** kill -9 the server (data on disk stays, as after a crash). */
  kill: () => Promise<void>
  /** Starts it again on the same port and directory. */
  restart: () => Promise<void>
  /** Runs a command with redis-cli and returns its output. */
  cli: (...args: string[]) => string
}

/** Resolves once redis-server accepts connections on `port`; rejects if the process exits first. No deadline: a loaded machine starts it late. */
async function listening (port: number, proc: ChildProcess): Promise<void> {
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`redis-server exited (${proc.exitCode ?? proc.signalCode}) before listening on ${port}`)
    const ok = await new Promise<boolean>(resolve => {
      const socket = createConnection({ port, host: '127.0.0.1' }, () => { socket.end(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/**
 * A private redis-server on a free port with its data in a temp directory,
 * AOF on with fsync on every write, killed at teardown. Never the shared 6379.
 */
export async function startRedis (t: TestContext): Promise<RedisServer> {
  const dir = tempDir(t, 'switchboard-redis-')
  const port = await freePort()
  let proc: ChildProcess | null = null
  let exited: Promise<void> = Promise.resolve()
  const start = async () => {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
      '--appendonly', 'yes', '--appendfsync', 'always', '--logfile', ''], { stdio: 'ignore' })
    const p = proc
    exited = new Promise(resolve => p.once('exit', () => resolve()))
    await listening(port, p)
  }
  const kill = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  }
  await start()
  t.teardown(kill)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    kill,
    restart: start,
    cli: (...args: string[]) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim()
  }
}
