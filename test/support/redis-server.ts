import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createConnection } from 'node:net'
import { join } from 'node:path'
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
  /** What a Switchboard instance needs to use it: `{ REDIS_URL }`, or `{ REDIS_CLUSTER_NODES }` for a cluster. */
  env: Record<string, string>
  /** kill -9 the server (data on disk stays, as after a crash). */
  kill: () => Promise<void>
  /** Starts it again on the same port and directory. */
  restart: () => Promise<void>
  /** Runs a command with redis-cli and returns its output. */
  cli: (...args: string[]) => string
  /** While killed: deletes what it stored, so `restart` brings it back empty (a cluster keeps its nodes.conf: same topology, no data). */
  wipe: () => void
}

/** Resolves once redis-server accepts connections on `port`; rejects if the process exits first. No deadline: a loaded machine starts it late. */
export async function listening (port: number, proc: ChildProcess): Promise<void> {
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
 * Under SWITCHBOARD_TEST_REDIS=cluster, a local Redis Cluster (3 masters, 3
 * replicas) instead, so the same tests run against cluster mode: kill and
 * restart then take the whole cluster down and up.
 */
export async function startRedis (t: TestContext): Promise<RedisServer> {
  if (process.env.SWITCHBOARD_TEST_REDIS === 'cluster') return startClusterAsServer(t)
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
    env: { REDIS_URL: `redis://127.0.0.1:${port}` },
    kill,
    restart: start,
    cli: (...args: string[]) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim(),
    wipe: () => { for (const f of readdirSync(dir)) rmSync(join(dir, f), { recursive: true, force: true }) }
  }
}

/** startRedis's cluster mode: the cluster module is loaded only then, so the single-server path stays as it was. */
async function startClusterAsServer (t: TestContext): Promise<RedisServer> {
  const { startRedisCluster } = await import('./redis-cluster.js')
  const cluster = await startRedisCluster(t)
  const first = cluster.masters[0]
  return {
    port: first.port,
    url: `redis://127.0.0.1:${first.port}`,
    dir: first.dir,
    env: { REDIS_CLUSTER_NODES: cluster.nodes },
    wipe: () => {
      for (const node of cluster.all) for (const f of readdirSync(node.dir)) if (f !== 'nodes.conf') rmSync(join(node.dir, f), { recursive: true, force: true })
    },
    kill: cluster.stopAll,
    restart: cluster.startAll,
    // -c follows MOVED/ASK, so a key lands on (and is read from) the master that owns its slot
    cli: (...args: string[]) => spawnSync('redis-cli', ['-c', '-p', String(first.port), ...args], { encoding: 'utf8' }).stdout.trim()
  }
}

/** True when a redis-sentinel binary is on PATH. */
export const haveSentinel = spawnSync('redis-sentinel', ['--version'], { stdio: 'ignore' }).status === 0

/** As redisTestOptions, for tests that also need redis-sentinel (skipped loudly without it, failed under REQUIRE_REDIS=1). */
export function sentinelTestOptions (): { skip?: string } {
  return prerequisiteOptions({
    present: haveRedis && haveSentinel,
    missing: haveRedis ? 'redis-sentinel is not installed' : 'redis-server is not installed',
    tests: 'the Redis Sentinel tests',
    install: 'apt-get install redis-server redis-sentinel',
    requireVar: 'REQUIRE_REDIS'
  })
}

export interface RedisProcess {
  port: number
  proc: ChildProcess
  /** kill -9 (its data on disk stays). */
  kill: () => Promise<void>
  cli: (...args: string[]) => string
}

/** One redis-server (or, with `sentinel`, redis-sentinel) process on a free port, killed at teardown. */
async function redisProcess (t: TestContext, args: (port: number, dir: string) => string[], sentinel = false): Promise<RedisProcess> {
  const dir = tempDir(t, sentinel ? 'switchboard-sentinel-' : 'switchboard-redis-')
  const port = await freePort()
  const proc = spawn(sentinel ? 'redis-sentinel' : 'redis-server', args(port, dir), { stdio: 'ignore', cwd: dir })
  const exited = new Promise<void>(resolve => proc.once('exit', () => resolve()))
  const kill = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  }
  t.teardown(kill)
  await listening(port, proc)
  return { port, proc, kill, cli: (...a: string[]) => spawnSync('redis-cli', ['-p', String(port), ...a], { encoding: 'utf8' }).stdout.trim() }
}

export interface SentinelGroup {
  /** The master group name the Sentinels monitor. */
  name: string
  master: RedisProcess
  replica: RedisProcess
  sentinels: RedisProcess[]
  /** `host:port,…` of the Sentinels (REDIS_SENTINELS). */
  sentinelList: string
  /** The port the Sentinels now name as master. */
  masterPort: () => number
}

/**
 * One master, one replica and three Sentinels (quorum 2) on free ports, each
 * with AOF fsynced on every write. Resolves once the Sentinels know the
 * replica and each other, so a failover can be authorized: a master killed
 * afterwards is replaced within `downAfterMs` plus an election.
 */
export async function startSentinelGroup (t: TestContext, downAfterMs = 1000): Promise<SentinelGroup> {
  const name = 'sbmaster'
  const serverArgs = (port: number, dir: string) => ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', 'yes', '--appendfsync', 'always', '--logfile', '']
  const master = await redisProcess(t, serverArgs)
  const replica = await redisProcess(t, (port, dir) => [...serverArgs(port, dir), '--replicaof', '127.0.0.1', String(master.port)])
  const sentinels: RedisProcess[] = []
  for (let i = 0; i < 3; i++) {
    sentinels.push(await redisProcess(t, (port, dir) => {
      const file = join(dir, 'sentinel.conf')
      // Sentinel rewrites its configuration file as it learns: it must be its own and writable
      writeFileSync(file, [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${master.port} 2`,
        `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
        `sentinel failover-timeout ${name} ${Math.max(3000, downAfterMs * 3)}`,
        `sentinel parallel-syncs ${name} 1`, ''].join('\n'))
      return [file]
    }, true))
  }
  const masterPort = () => Number(sentinels[0].cli('SENTINEL', 'get-master-addr-by-name', name).split('\n')[1])
  // the Sentinels find the replica through the master's INFO and each other through its hello channel: wait for both
  for (;;) {
    const ready = sentinels.every(s => /^OK 3 usable/.test(s.cli('SENTINEL', 'ckquorum', name)) &&
      /flags\nslave\n/.test(s.cli('SENTINEL', 'replicas', name)))
    if (ready && master.cli('INFO', 'replication').includes('connected_slaves:1')) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return { name, master, replica, sentinels, sentinelList: sentinels.map(s => `127.0.0.1:${s.port}`).join(','), masterPort }
}
