/**
 * Switchboard against a raw `ws` server and Socket.IO, scenario by scenario,
 * every server in a fresh process on core 0 and the load generator on core 1.
 *   npm run bench                 quick (a few minutes)
 *   npm run bench -- --full       the sizes
 *   node dist/bench/run.js --tiny --out DIR --no-docs   (the CI smoke test)
 *   --only S2,S5                  a subset (`--only soak`: S12, the soak)
 *   --only shards                 S13, 1, 2 and 3 Redis Cluster shards (bench/redis-shards.ts; only when named)
 *   --servers switchboard,raw-ws  only these servers
 *   --rates 500,1000 --step-ms 10000   other rate steps (e.g. a long steady step to profile)
 * S8 (two instances + Redis) starts a private redis-server on a free port per
 * measurement; without redis-server on PATH it is recorded as skipped.
 * Writes bench/results/<mode>-<date>.json (+ latest-<mode>.json), and in quick
 * and full mode the results section of docs/benchmarks-notebook.md and docs/benchmarks.svg.
 */
import { execFile, fork, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { cpus, platform, release, tmpdir, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import pidusage from 'pidusage'
import { pin, pinning } from './pin.js'
import { SWITCHBOARD_ENV, stop, waitFor } from './child.js'
import type { Job, Protocol, StepResult } from './generator.js'
import { renderChart, renderMarkdown, type BenchResults } from './report.js'
import type { ServerMemory, ServerStats } from './servers/control.js'

const here = dirname(fileURLToPath(import.meta.url))
const repoRoot = resolve(here, '..', '..')

const { values } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    tiny: { type: 'boolean', default: false },
    only: { type: 'string' },
    servers: { type: 'string' },
    rates: { type: 'string' },
    'step-ms': { type: 'string' },
    out: { type: 'string' },
    'no-docs': { type: 'boolean', default: false },
    baseline: { type: 'string' },
    render: { type: 'string' }
  }
})
const mode = values.tiny ? 'tiny' : values.full ? 'full' : 'quick'

interface Variant {
  script: string
  protocol: Protocol
  env?: Record<string, string>
  /** S8: the environment variable that gets the Redis URL */
  redisEnv?: string
  /** The generator adds an `idempotencyKey` to every publish (the cost of exactly-once writes). */
  idempotencyKeys?: boolean
}
const VARIANTS: Record<string, Variant> = {
  switchboard: { script: 'switchboard.js', protocol: 'switchboard', env: SWITCHBOARD_ENV, redisEnv: 'REDIS_URL' },
  'switchboard-idem': { script: 'switchboard.js', protocol: 'switchboard', env: SWITCHBOARD_ENV, idempotencyKeys: true },
  'switchboard-nohistory': { script: 'switchboard.js', protocol: 'switchboard', env: { ...SWITCHBOARD_ENV, ROOM_HISTORY_SIZE: '0', BENCH_PERSIST_MESSAGES: 'false' } },
  'raw-ws': { script: 'raw-ws.js', protocol: 'switchboard' },
  'socket.io': { script: 'socketio.js', protocol: 'socketio', redisEnv: 'BENCH_REDIS_URL' },
  'fastify-hello': { script: 'fastify-hello.js', protocol: 'switchboard' },
  'fastify-deliver': { script: 'fastify-deliver.js', protocol: 'switchboard' }
}

type Params = Omit<Job, 'scenario' | 'protocol' | 'ports' | 'serverPids'>
const base = { payloadBytes: 128, maxP99Ms: 50, minDelivered: 0.9999, publishersPerRoom: 1 }
const sizes: Record<typeof mode, Record<string, Params>> = {
  tiny: {
    S1: { ...base, clients: 40, rooms: 4, rates: [], stepMs: 0 },
    S2: { ...base, clients: 40, rooms: 1, publishersPerRoom: 4, rates: [20], stepMs: 300 },
    S3: { ...base, clients: 40, rooms: 4, rates: [40], stepMs: 300 },
    S4: { ...base, clients: 40, rooms: 4, rates: [40], stepMs: 300 },
    S5: { ...base, clients: 40, rooms: 1, rates: [40], stepMs: 300 },
    S6: { ...base, clients: 1, rooms: 0, rates: [], stepMs: 0, http: { connections: 2, durationSec: 1, path: '/api/send' } },
    S7: { ...base, clients: 40, rooms: 1, publishersPerRoom: 4, rates: [20], stepMs: 300, slowConsumers: 2, slowMs: 500 },
    S8: { ...base, clients: 20, rooms: 2, rates: [20], stepMs: 300 }
  },
  quick: {
    S1: { ...base, clients: 2000, rooms: 20, rates: [], stepMs: 0 },
    // the generator reads 90,000-160,000 deliveries/s at 90 % of its core (docs/benchmarks-notebook.md, "The generator's ceiling");
    // the ladders go on until a server fails or the generator is the limit (every server passed the old tops on 2026-12-02)
    S2: { ...base, clients: 1000, rooms: 1, publishersPerRoom: 10, rates: [10, 25, 40, 60, 80, 100, 120], stepMs: 1000 },
    S3: { ...base, clients: 1000, rooms: 100, rates: [1000, 2000, 3000, 4000, 6000, 8000], stepMs: 1000 },
    S4: { ...base, clients: 2000, rooms: 20, rates: [200], stepMs: 3000, maxP99Ms: Infinity },
    S5: { ...base, clients: 1000, rooms: 1, rates: [2000, 4000, 6000, 8000, 10000, 12000, 14000], stepMs: 1000 },
    S6: { ...base, clients: 1, rooms: 0, rates: [], stepMs: 0, http: { connections: 10, durationSec: 3, path: '/api/send' } },
    S7: { ...base, clients: 1000, rooms: 1, publishersPerRoom: 10, rates: [20], stepMs: 1500, slowConsumers: 10, slowMs: 3000 },
    // 10 rooms x 50 subscribers (+ 1 publisher each): 51 deliveries per publish, so 2,550 to 20,400 deliveries/s
    // (quick mode keeps fewer steps than full everywhere: about 10 minutes in all, S11 included)
    S8: { ...base, clients: 500, rooms: 10, rates: [50, 200, 400, 600], stepMs: 1000 }
  },
  full: {
    S1: { ...base, clients: 10000, rooms: 100, rates: [], stepMs: 0 },
    S2: { ...base, clients: 1000, rooms: 1, publishersPerRoom: 10, rates: [10, 20, 30, 40, 50, 60, 80, 100, 120, 150], stepMs: 5000 },
    S3: { ...base, clients: 1000, rooms: 100, rates: [500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10000], stepMs: 5000 },
    S4: { ...base, clients: 5000, rooms: 50, rates: [200], stepMs: 15000, maxP99Ms: Infinity },
    S5: { ...base, clients: 2000, rooms: 1, rates: [1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 14000, 16000, 20000], stepMs: 5000 },
    S6: { ...base, clients: 1, rooms: 0, rates: [], stepMs: 0, http: { connections: 10, durationSec: 10, path: '/api/send' } },
    S7: { ...base, clients: 1000, rooms: 1, publishersPerRoom: 10, rates: [20], stepMs: 5000, slowConsumers: 10, slowMs: 30000 },
    // 20 rooms x 100 subscribers (+ 1 publisher each): 101 deliveries per publish, 2,525 to 80,800 deliveries/s
    S8: { ...base, clients: 2000, rooms: 20, rates: [25, 50, 100, 200, 300, 400, 600, 800, 1000], stepMs: 5000 }
  }
}

/**
 * S11 how cost grows: CPU per delivery and memory per connection as rooms get
 * bigger (1 room of 10 to 10,000 members, ≈ 10,000 deliveries/s) and more
 * numerous (10 to 10,000 rooms of 1 member, the publisher, who gets its own
 * message as everywhere here; 2,000 publishes/s, under what a durable
 * publish path takes on one core), one fresh server per size. Filling a room
 * of n members sends n²/2 presence frames (every join is announced to the
 * room), so the 10,000-member room (50 million frames before the first
 * publish) runs in full mode only.
 */
interface ScalePoint { axis: 'members' | 'rooms', size: number, params: Params }
function scalingPoints (): ScalePoint[] {
  // BENCH_SCALE_ONLY=members:10000 runs one point (to study it alone)
  const only = process.env.BENCH_SCALE_ONLY?.split(':')
  const stepMs = mode === 'full' ? 5000 : mode === 'tiny' ? 300 : 2000
  const members = mode === 'tiny' ? [10, 20] : mode === 'full' ? [10, 100, 1000, 10000] : [10, 100, 1000]
  const rooms = mode === 'tiny' ? [10, 20] : [10, 1000, 10000]
  const point = (clients: number, roomCount: number, rate: number): Params => ({ ...base, maxP99Ms: null, clients, rooms: roomCount, rates: [rate], stepMs })
  const points = [
    ...members.map(n => ({ axis: 'members' as const, size: n, params: point(n, 1, Math.max(1, (mode === 'tiny' ? 200 : 10000) / n)) })),
    ...rooms.map(n => ({ axis: 'rooms' as const, size: n, params: point(n, n, mode === 'tiny' ? 200 : 2000) }))
  ]
  return only === undefined ? points : points.filter(p => p.axis === only[0] && p.size === Number(only[1]))
}

const SCENARIOS: Record<string, { title: string, servers: string[] }> = {
  S1: { title: 'idle memory', servers: ['switchboard', 'raw-ws', 'socket.io'] },
  S2: { title: 'big room fan-out', servers: ['switchboard', 'switchboard-nohistory', 'raw-ws', 'socket.io'] },
  S3: { title: 'small rooms', servers: ['switchboard', 'switchboard-idem', 'switchboard-nohistory', 'raw-ws', 'socket.io'] },
  S4: { title: 'latency', servers: ['switchboard', 'switchboard-nohistory', 'raw-ws', 'socket.io'] },
  S5: { title: 'direct messages', servers: ['switchboard', 'raw-ws', 'socket.io'] },
  S6: { title: 'HTTP send', servers: ['switchboard', 'fastify-hello', 'fastify-deliver'] },
  S7: { title: 'slow consumers', servers: ['switchboard', 'raw-ws', 'socket.io'] },
  S8: { title: 'two instances + Redis', servers: ['switchboard', 'socket.io'] },
  S9: { title: 'Pusher protocol fan-out', servers: ['pusher', 'native'] },
  S10: { title: 'Yjs documents', servers: ['switchboard', 'hocuspocus'] },
  S11: { title: 'how cost grows', servers: ['switchboard', 'raw-ws'] },
  S12: { title: 'soak', servers: ['switchboard'] },
  S13: { title: 'Redis Cluster shards', servers: ['switchboard'] }
}

/** Scenarios that run only when --only names them (S13 starts three Redis Clusters and needs cluster support in the build). */
const ON_REQUEST = new Set(['S13'])

/**
 * S9 and S10 run their own scripts (bench/pusher-fanout.ts, bench/yjs-vs-hocuspocus.ts),
 * which start their servers and drive the real clients (the `pusher` SDK and raw
 * protocol-7 sockets; @hocuspocus/provider). S9 is not pinned to a core; S10's
 * script pins each server to core 0 and its providers to core 1, as here.
 */
interface S9Params { subscribers: number, events: number, inflight: number }
/** S12 (`--only soak`): bench/soak.ts; a sample every `sampleSec`. */
interface S12Params { minutes: number, sampleSec: number, population: number, docMinutes: number }
const soakSizes: Record<typeof mode, S12Params> = {
  tiny: { minutes: 0.15, sampleSec: 3, population: 16, docMinutes: 2 },
  quick: { minutes: 3, sampleSec: 10, population: 120, docMinutes: 1 },
  full: { minutes: 30, sampleSec: 60, population: 400, docMinutes: 2 }
}

/** S12: the soak, one server under a steady churn of native, Pusher, Yjs and SSE clients (bench/soak.ts). */
async function runSoak (): Promise<Record<string, unknown>> {
  const p = soakSizes[mode]
  const out = await runScript('soak.js', ['--minutes', String(p.minutes), '--sample-sec', String(p.sampleSec), '--population', String(p.population), '--doc-minutes', String(p.docMinutes)], p.minutes * 60000 + 600000)
  return { switchboard: { ok: true, ...JSON.parse(out.slice(out.indexOf('{'))) } }
}
interface S10Params { docs: number, editors: number, rates: number[], seconds: number, maxP99Ms: number, minDelivered: number }
const externalSizes: Record<typeof mode, { S9: S9Params, S10: S10Params }> = {
  tiny: { S9: { subscribers: 20, events: 10, inflight: 4 }, S10: { docs: 2, editors: 2, rates: [2], seconds: 1, maxP99Ms: 50, minDelivered: 0.999 } },
  quick: { S9: { subscribers: 200, events: 50, inflight: 8 }, S10: { docs: 20, editors: 5, rates: [2, 5], seconds: 3, maxP99Ms: 50, minDelivered: 0.999 } },
  full: { S9: { subscribers: 1000, events: 200, inflight: 8 }, S10: { docs: 100, editors: 5, rates: [2, 5, 10, 20], seconds: 10, maxP99Ms: 50, minDelivered: 0.999 } }
}

function runScript (script: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [join(here, script), ...args], { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${script} failed: ${err.message} ${stderr.slice(-400)}`))
      else resolve(stdout)
    })
  })
}

/** S13: bench/redis-shards.ts, 1, 2 and 3 masters, two instances each (its own processes, pinned as here). */
async function runShards (): Promise<Record<string, unknown>> {
  const out = await runScript('redis-shards.js', ['--mode', mode], 600000)
  const parsed = JSON.parse(out.slice(out.indexOf('{'))) as { runs: Array<{ ok: boolean }> }
  return { switchboard: { ok: parsed.runs.some(r => r.ok), ...parsed } }
}

/** S9: one server, 1,000 protocol-7 subscribers of one channel fed by the SDK's signed HTTP trigger, then as many native members fed by the native HTTP publish. */
async function runPusher (): Promise<Record<string, unknown>> {
  const p = externalSizes[mode].S9
  const out = await runScript('pusher-fanout.js', ['--subscribers', String(p.subscribers), '--events', String(p.events), '--inflight', String(p.inflight)], 600000)
  const rows = out.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { protocol: string })
  const servers: Record<string, unknown> = {}
  for (const name of ['pusher', 'native']) {
    const row = rows.find(r => r.protocol === name)
    servers[name] = row ? { ok: true, ...row } : { ok: false, error: `no ${name} row in the script's output` }
  }
  return servers
}

/** S10: per rate step, Switchboard's /collab and @hocuspocus/server with the same real providers; the best step has p99 ≤ 50 ms and (almost) every update delivered. */
async function runYjs (): Promise<Record<string, unknown>> {
  const p = externalSizes[mode].S10
  const servers: Record<string, { ok: boolean, steps: Array<Record<string, any>>, best?: Record<string, any>, error?: string }> = {}
  for (const rate of p.rates) {
    let parsed: { results: Array<Record<string, any>> }
    try {
      const out = await runScript('yjs-vs-hocuspocus.js', ['--docs', String(p.docs), '--editors', String(p.editors), '--rate', String(rate), '--seconds', String(p.seconds)], 600000)
      parsed = JSON.parse(out.slice(out.indexOf('{')))
    } catch (err) {
      for (const name of ['switchboard', 'hocuspocus']) servers[name] = { ...(servers[name] ?? { steps: [] }), ok: false, error: (err as Error).message }
      break
    }
    for (const r of parsed.results) {
      const name = String(r.server).startsWith('switchboard') ? 'switchboard' : 'hocuspocus'
      const entry = servers[name] ?? (servers[name] = { ok: true, steps: [] })
      const delivered = r.deliveryExpected > 0 ? r.deliveryReceived / r.deliveryExpected : 0
      const step: Record<string, any> = { ratePerEditor: rate, ...r, deliveredRatio: delivered, pass: r.p99Ms <= p.maxP99Ms && delivered >= p.minDelivered }
      entry.steps.push(step)
      if (step.pass && (entry.best === undefined || step.updatesSentPerSecond > entry.best.updatesSentPerSecond)) entry.best = step
    }
  }
  return servers
}

// --baseline DIR: also run the Switchboard built in another checkout's dist/ (before/after a change, same run)
if (values.baseline) {
  VARIANTS['switchboard-baseline'] = { script: resolve(values.baseline, 'bench', 'servers', 'switchboard.js'), protocol: 'switchboard', env: SWITCHBOARD_ENV }
  for (const sc of Object.values(SCENARIOS)) if (sc.servers.includes('switchboard')) sc.servers.splice(1, 0, 'switchboard-baseline')
}

const coreCount = cpus().length
interface Started { child: ChildProcess, port: number, dataDir: string }

async function startServer (name: string, extraEnv: Record<string, string> = {}): Promise<Started> {
  const variant = VARIANTS[name]
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const child = fork(resolve(here, 'servers', variant.script), [], {
    // BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles every server process
    execArgv: ['--expose-gc', ...(process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [])],
    env: { ...process.env, DATA_DIR: dataDir, ...variant.env, ...extraEnv },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  pin(child.pid as number, 0)
  const { port } = await waitFor<{ port: number }>(child, 'ready')
  return { child, port, dataDir }
}

async function weigh (child: ChildProcess): Promise<ServerMemory & { rssOutside: number }> {
  const reply = waitFor<{ memory: ServerMemory }>(child, 'memory', 10000)
  child.send({ type: 'gc' })
  const { memory } = await reply
  const outside = await pidusage(child.pid as number)
  return { ...memory, rssOutside: outside.memory }
}

async function runOne (scenario: string, name: string, params: Params = sizes[mode][scenario]): Promise<Record<string, unknown>> {
  const variant = VARIANTS[name]
  const generator = fork(join(here, 'generator.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  pin(generator.pid as number, pinning ? 1 : 0)
  const [server] = await Promise.all([startServer(name), waitFor(generator, 'ready')])
  try {
    // the bare Fastify yardstick has no WebSocket client to deliver to
    const clients = name === 'fastify-hello' ? 0 : params.clients
    const job: Job = { ...params, clients, scenario: scenario as Job['scenario'], protocol: variant.protocol, idempotencyKeys: variant.idempotencyKeys, ports: [server.port], serverPids: [server.child.pid as number] }
    // S11's big room: filling it is quadratic (presence), 10,000 members take minutes
    const timeoutMs = 120000 + (params.rates.length * (params.stepMs + 3000)) + (params.slowMs ?? 0) + (params.http?.durationSec ?? 0) * 1000 + (scenario === 'S11' ? params.clients * 60 : 0)
    if (scenario === 'S1') {
      await new Promise(resolve => setTimeout(resolve, 500))
      const empty = await weigh(server.child)
      const holding = waitFor(generator, 'holding', timeoutMs)
      generator.send({ type: 'job', job })
      await holding
      await new Promise(resolve => setTimeout(resolve, 1000))
      const loaded = await weigh(server.child)
      const result = waitFor<{ result: Record<string, unknown> }>(generator, 'result', 60000)
      generator.send({ type: 'release' })
      const idle = (await result).result
      const n = idle.connections as number
      return {
        ...idle,
        empty,
        loaded,
        rssBytesPerConnection: (loaded.rssOutside - empty.rssOutside) / n,
        heapBytesPerConnection: (loaded.heapUsed - empty.heapUsed) / n,
        externalBytesPerConnection: (loaded.external - empty.external) / n
      }
    }
    // S11: the server empty first, so that memory per connection is loaded minus empty
    const empty = scenario === 'S11' ? await weigh(server.child) : undefined
    const result = waitFor<{ result: Record<string, unknown> }>(generator, 'result', timeoutMs)
    generator.send({ type: 'job', job })
    return { ...(await result).result, ...(empty ? { emptyRssMB: empty.rssOutside / 1048576 } : {}) }
  } finally {
    await stop(generator)
    await stop(server.child)
    rmSync(server.dataDir, { recursive: true, force: true })
  }
}

/** True when a redis-server binary is on PATH: S8 needs one, and is recorded as skipped without it. */
function haveRedisServer (): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0
}

function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() => resolve(typeof address === 'object' && address ? address.port : 0))
    })
    srv.once('error', reject)
  })
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

interface Broker { proc: ChildProcess, port: number, url: string, dir: string }

/**
 * A private redis-server for one measurement: a free port (never the shared
 * 6379), no RDB snapshots and no AOF, pinned to the servers' core.
 */
async function startRedisServer (): Promise<Broker> {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-bench-redis-'))
  const port = await freePort()
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--logfile', ''], { stdio: 'ignore' })
  const broker = { proc, port, url: `redis://127.0.0.1:${port}`, dir }
  proc.once('error', () => {}) // a failed spawn shows as the missing pid below
  try {
    if (proc.pid === undefined) throw new Error('redis-server did not start')
    pin(proc.pid, 0)
    // until it accepts connections, or exits: no deadline, a loaded machine starts it late
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode} (port ${port})`)
      const ok = await new Promise<boolean>(resolve => {
        const socket = createConnection({ port, host: '127.0.0.1' }, () => { socket.end(); resolve(true) })
        socket.once('error', () => resolve(false))
      })
      if (ok) return broker
      await sleep(50)
    }
  } catch (err) {
    await stopBroker(broker)
    throw err
  }
}

async function stopBroker (broker: Broker): Promise<void> {
  const { proc } = broker
  if (proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise(resolve => proc.once('exit', resolve))
    proc.kill('SIGKILL')
    await exited
  }
  rmSync(broker.dir, { recursive: true, force: true })
}

/** The instance's broker counters over IPC (both server kinds answer the same request); null if it does not answer. */
async function askStats (child: ChildProcess): Promise<ServerStats | null> {
  try {
    const reply = waitFor<{ stats: ServerStats }>(child, 'stats', 5000)
    child.send({ type: 'stats' })
    return (await reply).stats
  } catch {
    return null
  }
}

/** Switchboard only: switchboard_redis_pubsub_messages_total from the instance's own /metrics, by direction. */
async function scrapePubsub (port: number): Promise<{ received: number, published: number } | null> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    const out = { received: 0, published: 0 }
    for (const m of text.matchAll(/^switchboard_redis_pubsub_messages_total\{([^}]*)\} (\S+)$/gm)) {
      const direction = /direction="([^"]*)"/.exec(m[1])?.[1]
      if (direction === 'received' || direction === 'published') out[direction] += Number(m[2])
    }
    return out
  } catch {
    return null
  }
}

/**
 * One S8 measurement on a fresh cluster: a private redis-server and three
 * instances of the server, all on core 0. The generator (core 1) puts the
 * subscribers on instance 1 and the publishers on instance 2 (`same`: on
 * instance 1 too); instance 3 gets no client at all, and afterwards says how
 * many pub/sub messages reached it anyway.
 */
async function crossInstanceJob (name: string, same: boolean, rates?: number[]): Promise<Record<string, any>> {
  const variant = VARIANTS[name]
  const params = { ...sizes[mode].S8, ...(rates ? { rates, allSteps: true } : {}) }
  const broker = await startRedisServer()
  const instances: Started[] = []
  const generator = fork(join(here, 'generator.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  pin(generator.pid as number, pinning ? 1 : 0)
  try {
    const generatorReady = waitFor(generator, 'ready')
    // one after the other: three start-ups at once on one core would only slow each other down
    for (let i = 0; i < 3; i++) instances.push(await startServer(name, { [variant.redisEnv ?? 'REDIS_URL']: broker.url }))
    await generatorReady
    const [a, b, idle] = instances
    const pid = (s: Started) => s.child.pid as number
    const job: Job = {
      ...params,
      scenario: 'S8',
      protocol: variant.protocol,
      ports: same ? [a.port, a.port] : [a.port, b.port],
      serverPids: [pid(a), pid(b)],
      watchPids: { 'redis-server': broker.proc.pid as number, 'instance without members': pid(idle) }
    }
    // every rate plus the warm-up step
    const timeoutMs = 120000 + (params.rates.length + 1) * (params.stepMs + 3000)
    const result = waitFor<{ result: Record<string, any> }>(generator, 'result', timeoutMs)
    generator.send({ type: 'job', job })
    const measured = (await result).result
    // messages still on their way through the broker land before the counters are read
    await sleep(500)
    const stats = await Promise.all(instances.map(s => askStats(s.child)))
    const scraped = variant.protocol === 'switchboard' ? await scrapePubsub(idle.port) : null
    const roles = same ? ['subscribers and publishers', 'no clients', 'no clients'] : ['subscribers', 'publishers', 'no clients']
    return {
      ...measured,
      instances: instances.map((s, i) => ({ role: roles[i], ...(stats[i] ?? { pubsubMessages: null, pubsubPublished: null }) })),
      memberless: {
        // IPC is the path both server kinds share; /metrics is Switchboard's own account of the same counter
        pubsubMessages: stats[2]?.pubsubMessages ?? scraped?.received ?? null,
        pubsubPublished: stats[2]?.pubsubPublished ?? scraped?.published ?? null,
        metrics: scraped
      }
    }
  } finally {
    await stop(generator)
    for (const s of instances) {
      await stop(s.child)
      rmSync(s.dataDir, { recursive: true, force: true })
    }
    await stopBroker(broker)
  }
}

/**
 * S8: the cross-instance run (deliveries/s, p99), the same job with every
 * client on one instance (the p99 the broker hop adds, compared rate by rate),
 * and the pub/sub messages received by the instance without members.
 */
async function runCrossInstance (name: string): Promise<Record<string, unknown>> {
  const cross = await crossInstanceJob(name, false)
  const crossSteps = (cross.steps ?? []) as StepResult[]
  // the same-instance run measures every rate the cross-instance run did, even past a failing step, so each has a partner
  const same = await crossInstanceJob(name, true, crossSteps.length > 0 ? crossSteps.map(st => st.rate) : undefined)
  const sameSteps = (same.steps ?? []) as StepResult[]
  const addedP99 = crossSteps.flatMap(c => {
    const s = sameSteps.find(st => st.rate === c.rate)
    return s ? [{ rate: c.rate, crossMs: c.latencyMs.p99, sameMs: s.latencyMs.p99, addedMs: c.latencyMs.p99 - s.latencyMs.p99, ratio: s.latencyMs.p99 > 0 ? c.latencyMs.p99 / s.latencyMs.p99 : null }] : []
  })
  return { ...cross, same: { steps: same.steps, best: same.best, instances: same.instances, memberless: same.memberless }, addedP99 }
}

/** S11: every size of both axes, one fresh server each; a size that fails is recorded and the next one runs. */
async function runScaling (name: string): Promise<Record<string, unknown>> {
  const points: Array<Record<string, unknown>> = []
  for (const p of scalingPoints()) {
    try {
      const r = await runOne('S11', name, p.params) as { steps?: StepResult[], emptyRssMB?: number, settledMs?: number, closedByServer?: { beforeSteps: number, total: number } }
      const st = r.steps?.[r.steps.length - 1]
      points.push({
        axis: p.axis,
        size: p.size,
        connections: p.params.clients,
        rooms: p.params.rooms,
        rate: p.params.rates[0],
        step: st,
        emptyRssMB: r.emptyRssMB,
        // how long the room's fill took to arrive, and connections the server closed (none expected)
        settledMs: r.settledMs,
        closedByServer: r.closedByServer,
        rssBytesPerConnection: st && r.emptyRssMB !== undefined ? (st.serverRssMaxMB - r.emptyRssMB) * 1048576 / p.params.clients : undefined
      })
    } catch (err) {
      points.push({ axis: p.axis, size: p.size, error: String((err as Error).message ?? err) })
    }
  }
  return { points }
}

/**
 * Rewrites the results section of docs/benchmarks-notebook.md (between its
 * markers) and docs/benchmarks.svg: a full run its own section and the chart,
 * a quick run its own section, so that the notebook holds the latest of each
 * (`--no-docs`: neither). docs/benchmarks.md, the page a user reads, shows the
 * chart and is written by hand from a full run.
 */
function writeDocs (res: BenchResults): void {
  const doc = join(repoRoot, 'docs', 'benchmarks-notebook.md')
  const tag = res.mode === 'full' ? 'bench:results' : `bench:results-${res.mode}`
  const start = `<!-- ${tag}:start -->`
  const end = `<!-- ${tag}:end -->`
  let text: string
  try {
    text = readFileSync(doc, 'utf8')
  } catch {
    text = `# Benchmarks: the lab notebook\n\n${start}\n${end}\n`
  }
  const heading = res.mode === 'full' ? '' : `### Latest ${res.mode} run\n\n`
  const section = `${start}\n${heading}${renderMarkdown(res)}\n${end}`
  text = text.includes(start) ? text.replace(new RegExp(`${start}[\\s\\S]*${end}`), () => section) : `${text}\n${section}\n`
  writeFileSync(doc, text)
  if (res.mode === 'full') writeFileSync(join(repoRoot, 'docs', 'benchmarks.svg'), renderChart(res))
}

// --render FILE: rewrite the docs from a saved results file, without running anything
if (values.render) {
  writeDocs(JSON.parse(readFileSync(values.render, 'utf8')) as BenchResults)
  process.exit(0)
}

// `soak` is S12's name on the command line
const only = values.only?.split(',').map(s => s.trim().toUpperCase()).map(s => s === 'SOAK' ? 'S12' : s === 'SHARDS' ? 'S13' : s)
// --servers switchboard,raw-ws: only these servers (profiling one, comparing two)
const onlyServers = values.servers?.split(',').map(s => s.trim())
const results: BenchResults = {
  mode,
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: coreCount, memoryGB: Math.round(totalmem() / 1073741824), os: `${platform()} ${release()}`, node: process.version, pinned: pinning },
  params: {},
  scenarios: {}
}
const startedAt = Date.now()
for (const [scenario, { title, servers }] of Object.entries(SCENARIOS)) {
  if (only ? !only.includes(scenario) : ON_REQUEST.has(scenario)) continue
  if (scenario === 'S13' && !haveRedisServer()) {
    results.scenarios.S13 = { title, servers: {}, skipped: 'redis-server is not on PATH (apt-get install redis-server)' }
    process.stderr.write(`S13 ${title}: skipped, no redis-server\n`)
    continue
  }
  if (scenario === 'S9' || scenario === 'S10' || scenario === 'S12' || scenario === 'S13') {
    if (onlyServers) continue
    results.params[scenario] = scenario === 'S12' ? soakSizes[mode] : scenario === 'S13' ? { script: 'bench/redis-shards.ts', mode } : externalSizes[mode][scenario]
    process.stderr.write(`${scenario} ${title}…`)
    const began = Date.now()
    try {
      results.scenarios[scenario] = { title, servers: await (scenario === 'S9' ? runPusher() : scenario === 'S10' ? runYjs() : scenario === 'S13' ? runShards() : runSoak()) }
      process.stderr.write(` ${((Date.now() - began) / 1000).toFixed(1)} s\n`)
    } catch (err) {
      results.scenarios[scenario] = { title, servers: { switchboard: { ok: false, error: String((err as Error).message ?? err) } } }
      process.stderr.write(` failed: ${(err as Error).message}\n`)
    }
    continue
  }
  if (scenario === 'S8' && !haveRedisServer()) {
    results.scenarios.S8 = { title, servers: {}, skipped: 'redis-server is not on PATH (apt-get install redis-server)' }
    process.stderr.write(`S8 ${title}: skipped, no redis-server\n`)
    continue
  }
  // --rates 500,1000 --step-ms 10000: other steps for the chosen scenarios (profiling a steady load)
  if (scenario !== 'S11') {
    if (values.rates) sizes[mode][scenario].rates = values.rates.split(',').map(Number)
    if (values['step-ms']) sizes[mode][scenario].stepMs = Number(values['step-ms'])
    const http = sizes[mode][scenario].http
    if (values['step-ms'] && http) http.durationSec = Number(values['step-ms']) / 1000
  }
  results.params[scenario] = scenario === 'S11' ? { points: scalingPoints().map(p => ({ axis: p.axis, size: p.size, clients: p.params.clients, rooms: p.params.rooms, rate: p.params.rates[0], stepMs: p.params.stepMs })) } : sizes[mode][scenario]
  results.scenarios[scenario] = { title, servers: {} }
  for (const name of servers) {
    if (onlyServers && !onlyServers.includes(name)) continue
    process.stderr.write(`${scenario} ${title}: ${name}…`)
    const began = Date.now()
    try {
      results.scenarios[scenario].servers[name] = { ok: true, ...await (scenario === 'S8' ? runCrossInstance(name) : scenario === 'S11' ? runScaling(name) : runOne(scenario, name)) }
      process.stderr.write(` ${((Date.now() - began) / 1000).toFixed(1)} s\n`)
    } catch (err) {
      results.scenarios[scenario].servers[name] = { ok: false, error: String((err as Error).message ?? err) }
      process.stderr.write(` failed: ${(err as Error).message}\n`)
    }
  }
}
results.durationSeconds = Math.round((Date.now() - startedAt) / 1000)

const outDir = values.out ? resolve(values.out) : join(repoRoot, 'bench', 'results')
mkdirSync(outDir, { recursive: true })
const stamp = results.date.replace(/[:.]/g, '-')
writeFileSync(join(outDir, `${mode}-${stamp}.json`), JSON.stringify(results, null, 2))
writeFileSync(join(outDir, `latest-${mode}.json`), JSON.stringify(results, null, 2))
if (!values['no-docs'] && mode !== 'tiny') writeDocs(results)
process.stdout.write(renderMarkdown(results) + '\n')
pidusage.clear()
