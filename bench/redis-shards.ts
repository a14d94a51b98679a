/**
 * S13, Redis Cluster shards: what adding shards does to cross-instance delivery.
 *   npm run bench -- --only shards              (quick, under 2 minutes)
 *   node dist/bench/redis-shards.js --mode quick|full|tiny [--shards 0,1,2,3] [--fsync everysec|always|no]
 *
 * For 1, 2 and 3 masters (no replicas; one shard is a one-master cluster, so
 * every case takes the same code path: REDIS_CLUSTER_NODES, hash-tagged keys,
 * sharded pub/sub), a fresh local cluster (test/support/redis-cluster.ts; AOF
 * with appendfsync everysec, Redis's default: with `always`, every history
 * write's fsync would be most of what Redis spends, whatever the shards) and
 * two Switchboard instances on it: N rooms, their subscribers on instance B,
 * one publisher per room on instance A, so every delivery to a subscriber
 * crossed Redis (the load generator's S8 job, open loop, a rate ladder).
 * Instances and masters are pinned to core 0, the generator to core 1, as in S8.
 *
 * Per step: cross-instance deliveries/s, p99, the instances' CPU per
 * delivery, and per shard its master's CPU time over the step divided by the
 * cross-instance deliveries of the rooms whose channel slot that shard owns
 * (publishes go round-robin over the rooms, so a shard's share is its share
 * of rooms, counted from the masters' own PUBSUB SHARDCHANNELS while the job
 * runs). A master's CPU time per step is the scheduler's nanosecond account
 * of its threads (the generator's watchedCpuMs): utime+stime, which the
 * cluster handle's cpuSeconds reads, moves in 10 ms ticks, too coarse for a
 * shard's share of a 2-second step; cpuSeconds gives the whole job's total.
 *
 * On a 2-core machine the two instances share core 0 with the masters and
 * they, not Redis, are the limit (Redis stays under about a tenth of the
 * core): deliveries/s cannot grow with shards there. What this measures is
 * that every shard count delivers everything, how Redis's work splits over
 * the shards, and what a delivery costs Redis and the instances in each case.
 *
 * "0 shards" is the baseline: one plain redis-server (same AOF settings)
 * through REDIS_URL, the same job; what cluster mode itself costs is the
 * difference with one shard. Every rate of the ladder runs for every shard
 * count (a failed step does not end the ladder), so they compare rate by rate.
 *
 * When this build has no REDIS_CLUSTER_NODES (cluster support not merged
 * yet), it runs a dry run instead: one plain redis-server (same AOF
 * settings) through REDIS_URL, flagged `dryRun` in the output; a
 * one-master cluster would not do, as a client that is not cluster-aware
 * gets CROSSSLOT for its multi-key commands there.
 * The instances' error log lines are counted (and the first few kept): a run
 * whose deliveries fail says why. Prints one JSON object.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { ConfigSchema } from '../plugins/core/config.js'
import { startRedisCluster, parseClusterNodes, processCpuSeconds, type AppendFsync, type RedisCluster } from '../test/support/redis-cluster.js'
import { startRedis } from '../test/support/redis-server.js'
import type { TestContext } from '../test/support/helper.js'
import type { Job, StepResult } from './generator.js'
import { pin, pinning } from './pin.js'
import { SWITCHBOARD_ENV, stop, waitFor } from './child.js'
import type { ServerStats } from './servers/control.js'

const here = dirname(fileURLToPath(import.meta.url))

const { values } = parseArgs({
  options: {
    mode: { type: 'string', default: 'quick' },
    shards: { type: 'string', default: '0,1,2,3' },
    fsync: { type: 'string', default: 'everysec' }
  }
})

export interface ShardParams { clients: number, rooms: number, rates: number[], stepMs: number }
/** Small rooms (5 subscribers) and many publishes: Redis work is per publish, so this loads Redis more per delivery than S8's big rooms. */
export const shardSizes: Record<string, ShardParams> = {
  tiny: { clients: 24, rooms: 6, rates: [30], stepMs: 400 },
  quick: { clients: 300, rooms: 60, rates: [250, 500, 1000, 2000], stepMs: 2000 },
  full: { clients: 1200, rooms: 120, rates: [250, 500, 1000, 2000, 3000, 4000], stepMs: 5000 }
}
const params = shardSizes[values.mode] ?? shardSizes.quick
const shardCounts = values.shards.split(',').map(Number)
const appendfsync = values.fsync as AppendFsync
if (!['always', 'everysec', 'no'].includes(appendfsync)) throw new Error(`--fsync: always, everysec or no (got ${values.fsync})`)

/** Whether this build knows REDIS_CLUSTER_NODES (the lead's cluster support); without it, a dry run over REDIS_URL. */
const clusterSupport = 'REDIS_CLUSTER_NODES' in (ConfigSchema.properties as Record<string, unknown>)

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/** The child's next IPC message of `type`; rejects when it reports `failed` or exits first (no deadline: a loaded machine starts late). */
interface Instance { child: ChildProcess, port: number, dataDir: string, errors: { count: number, first: string[] } }

async function startInstance (env: Record<string, string>): Promise<Instance> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-shards-'))
  const child = fork(resolve(here, 'servers', 'switchboard.js'), [], {
    execArgv: ['--expose-gc'],
    env: { ...process.env, DATA_DIR: dataDir, ...SWITCHBOARD_ENV, ...env },
    // its log is read here: this script's stdout is the JSON result
    stdio: ['ignore', 'pipe', 'inherit', 'ipc']
  })
  pin(child.pid as number, 0)
  const errors = { count: 0, first: [] as string[] }
  let partial = ''
  child.stdout!.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n')
    partial = lines.pop() ?? ''
    for (const line of lines) {
      if (!/"level":(50|60)/.test(line)) continue
      errors.count++
      if (errors.first.length < 3) errors.first.push(line.slice(0, 1500))
    }
  })
  const { port } = await waitFor<{ port: number }>(child, 'ready')
  return { child, port, dataDir, errors }
}

async function askStats (child: ChildProcess): Promise<ServerStats | null> {
  const reply = waitFor<{ stats: ServerStats }>(child, 'stats')
  child.send({ type: 'stats' })
  return await Promise.race([reply.then(r => r.stats), sleep(5000).then(() => null)])
}

/** Rooms with a shard channel on each master now (PUBSUB SHARDCHANNELS; both instances' subscriptions to a room are one channel). */
async function roomsPerShard (cluster: RedisCluster): Promise<number[]> {
  return Promise.all(cluster.masters.map(async m => (await m.run('PUBSUB', 'SHARDCHANNELS')).split('\n').filter(c => c.includes('room')).length))
}

/** What a measurement runs on: a cluster of `shards` masters, or (dry run) one plain redis-server. */
interface Backend {
  env: Record<string, string>
  nodes: string
  pids: number[]
  cpuSeconds: () => number[]
  /** Rooms per shard counted from Redis while clients are connected (all zero without sharded channels). */
  counted: () => Promise<number[]>
  /** Rooms per shard from the channel names' slots. */
  computed: () => number[]
}

async function backend (t: TestContext, shards: number): Promise<Backend> {
  if (shards === 0 || !clusterSupport) {
    const redis = await startRedis(t)
    redis.cli('CONFIG', 'SET', 'appendfsync', appendfsync)
    const pid = Number(/process_id:(\d+)/.exec(redis.cli('INFO', 'server'))?.[1])
    return { env: redis.env, nodes: redis.url, pids: [pid], cpuSeconds: () => [processCpuSeconds(pid)], counted: async () => [0], computed: () => [params.rooms] }
  }
  const cluster = await startRedisCluster(t, { masters: shards, replicasPerMaster: 0, appendfsync })
  return {
    env: { REDIS_CLUSTER_NODES: cluster.nodes },
    nodes: cluster.nodes,
    pids: cluster.masters.map(m => m.pid),
    cpuSeconds: cluster.cpuSeconds,
    counted: () => roomsPerShard(cluster),
    computed: () => computedRoomsPerShard(cluster)
  }
}

/** One shard count: a fresh cluster, two instances, the generator's cross-instance job. */
async function measure (shards: number): Promise<Record<string, unknown>> {
  const teardowns: Array<() => unknown> = []
  const instances: Instance[] = []
  const counter = { done: false, running: Promise.resolve() }
  failureNotes = {}
  const generator = fork(join(here, 'generator.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  pin(generator.pid as number, pinning ? 1 : 0)
  try {
    const generatorReady = waitFor(generator, 'ready')
    const redis = await backend({ teardown: fn => { teardowns.push(fn) } }, shards)
    for (const pid of redis.pids) pin(pid, 0)
    // one after the other: two start-ups at once on one core only slow each other down
    for (let i = 0; i < 2; i++) instances.push(await startInstance(redis.env))
    failureNotes.instanceErrors = instances.map(s => s.errors)
    await generatorReady
    const [a, b] = instances
    const names = redis.pids.map((_, i) => `shard ${i + 1}`)
    const job: Job = {
      scenario: 'S8',
      protocol: 'switchboard',
      payloadBytes: 128,
      maxP99Ms: 50,
      minDelivered: 0.9999,
      clients: params.clients,
      rooms: params.rooms,
      rates: params.rates,
      stepMs: params.stepMs,
      allSteps: true,
      // the S8 job subscribes on ports[0] and publishes on ports[1]: subscribers on B, publishers on A
      ports: [b.port, a.port],
      serverPids: [a.child.pid as number, b.child.pid as number],
      // per step, each master's CPU time (watchedCpuMs), aligned with the step's deliveries
      watchPids: Object.fromEntries(redis.pids.map((pid, i) => [names[i], pid]))
    }
    const cpuBefore = redis.cpuSeconds()
    const result = waitFor<{ result: { steps: StepResult[], best: StepResult | null } }>(generator, 'result')
    generator.send({ type: 'job', job })
    // the rooms' channels per master, counted while the clients are connected (the largest count seen)
    let perShard = redis.pids.map(() => 0)
    counter.running = (async () => {
      while (!counter.done) {
        const now = await redis.counted()
        if (now.reduce((x, y) => x + y, 0) > perShard.reduce((x, y) => x + y, 0)) perShard = now
        await sleep(200)
      }
    })()
    const measured = (await result).result
    counter.done = true
    await counter.running
    const cpuAfter = redis.cpuSeconds()
    const stats = await Promise.all(instances.map(s => askStats(s.child)))
    // without sharded channels (the dry run), the rooms' slots say where they would be
    const counted = perShard.reduce((x, y) => x + y, 0) === params.rooms
    const roomShares = counted ? perShard : redis.computed()
    const perRoom = Math.ceil(params.clients / params.rooms)
    const steps = measured.steps.map(st => {
      // the publisher's own copy stays on A: perRoom of every perRoom + 1 deliveries crossed Redis
      const cross = st.received * perRoom / (perRoom + 1)
      const redisCpuMs = names.map(n => st.watchedCpuMs?.[n] ?? 0)
      return {
        rate: st.rate,
        crossDeliveriesPerSecond: st.deliveriesPerSecond * perRoom / (perRoom + 1),
        deliveredRatio: st.deliveredRatio,
        p99Ms: st.latencyMs.p99,
        instancesCpuUsPerDelivery: st.serverCpuUsPerDelivery,
        redisCpuMs,
        redisCpuUsPerDeliveryByShard: redisCpuMs.map((ms, i) => cross > 0 && roomShares[i] > 0 ? ms * 1000 / (cross * roomShares[i] / params.rooms) : null),
        redisCpuUsPerDelivery: cross > 0 ? redisCpuMs.reduce((x, y) => x + y, 0) * 1000 / cross : null,
        redisCpuUsPerPublish: st.sent > 0 ? redisCpuMs.reduce((x, y) => x + y, 0) * 1000 / st.sent : null,
        generatorCpuPercent: st.generatorCpuPercent,
        valid: st.valid,
        pass: st.pass,
        raw: st
      }
    })
    const bestRate = measured.best?.rate
    return {
      shards,
      redis: redis.nodes,
      roomsPerShard: roomShares,
      roomsCountedFrom: counted ? 'PUBSUB SHARDCHANNELS' : shards > 0 && clusterSupport ? 'CLUSTER KEYSLOT of the channel names' : 'one server',
      steps,
      best: steps.find(s => s.rate === bestRate && s.pass) ?? null,
      // the whole job (connections, warm-up step, every step), from cpuSeconds deltas
      redisCpuSecondsWholeJob: cpuAfter.map((s, i) => +(s - cpuBefore[i]).toFixed(2)),
      pubsub: { publishersInstance: stats[0], subscribersInstance: stats[1] },
      instanceErrors: instances.map(s => s.errors)
    }
  } finally {
    // the count asks the masters: it ends before they go
    counter.done = true
    await counter.running.catch(() => {})
    await stop(generator)
    for (const s of instances) {
      await stop(s.child)
      rmSync(s.dataDir, { recursive: true, force: true })
    }
    for (const fn of teardowns.reverse()) await fn()
  }
}

/** Where the rooms' channels (`<prefix>ch:{room:<name>}`, plugins/cluster/broker.ts) hash to: the rooms per master by slot. */
function computedRoomsPerShard (cluster: RedisCluster): number[] {
  const lines = parseClusterNodes(cluster.masters[0].cli('CLUSTER', 'NODES'))
  const counts = cluster.masters.map(() => 0)
  for (let i = 0; i < params.rooms; i++) {
    const slot = cluster.slotOf(`sb:ch:{room:room${i}}`)
    const owner = lines.find(l => l.flags.includes('master') && l.slots.some(([lo, hi]) => slot >= lo && slot <= hi))
    const at = cluster.masters.findIndex(m => m.port === owner?.port)
    if (at >= 0) counts[at]++
  }
  return counts
}

/** What the measurement running now has seen so far, for its failure report (the instances' errors). */
let failureNotes: Record<string, unknown> = {}

const started = Date.now()
const runs: Array<Record<string, unknown>> = []
for (const shards of clusterSupport ? shardCounts : [0]) {
  process.stderr.write(shards === 0 ? ' plain redis-server…' : ` ${shards} shard${shards > 1 ? 's' : ''}…`)
  try {
    runs.push({ ok: true, ...await measure(shards) })
  } catch (err) {
    runs.push({ ok: false, shards, error: String((err as Error)?.stack ?? err), ...failureNotes })
  }
}
process.stdout.write(JSON.stringify({
  params: { ...params, appendfsync },
  dryRun: clusterSupport ? undefined : 'this build has no REDIS_CLUSTER_NODES: one plain redis-server through REDIS_URL instead of 1, 2 and 3 shards',
  pinned: pinning,
  seconds: Math.round((Date.now() - started) / 1000),
  runs
}, null, 2) + '\n')
