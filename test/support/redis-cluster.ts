import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { freePort } from './process.js'
import { tempDir, type TestContext } from './helper.js'
import { listening } from './redis-server.js'

/** One redis-server of a cluster. Its node id and files stay across kill/restart (nodes.conf and the AOF are in `dir`). */
export interface ClusterNode {
  port: number
  /** The cluster bus port (set with --cluster-port: a free port + 10000 may not exist). */
  busPort: number
  dir: string
  /** The node id (CLUSTER MYID), kept in nodes.conf across restarts. */
  id: string
  /** The pid of the running process (a new one after restart). */
  readonly pid: number
  alive: () => boolean
  /** kill -9 (data on disk stays, as after a crash). */
  kill: () => Promise<void>
  /** Starts it again on the same port, directory and nodes.conf; resolves once it accepts connections. */
  restart: () => Promise<void>
  /** redis-cli against this node (synchronous: handy in assertions). */
  cli: (...args: string[]) => string
  /** redis-cli against this node without blocking the event loop, so clients in the same process keep running. */
  run: (...args: Array<string | number>) => Promise<string>
}

export interface RedisCluster {
  /** `127.0.0.1:p1,127.0.0.1:p2,…` of the masters at start: what REDIS_CLUSTER_NODES gets. */
  nodes: string
  /** The masters at start, in slot order, and their replicas. Roles change after a failover: ask masterOf. */
  masters: ClusterNode[]
  replicas: ClusterNode[]
  /** Every node, masters first. */
  all: ClusterNode[]
  slotOf: (key: string) => number
  /** The master that owns `slot` now, as a live node sees it (asked each time, never cached). */
  masterOf: (slot: number) => ClusterNode
  /** kill -9 the master of `slot`; resolves once a replica took the slot over and every live node says cluster_state:ok. */
  killMasterOf: (slot: number) => Promise<{ promoted: ClusterNode, ms: number }>
  /** Moves one slot and its keys to another master (`toPort`, or the next one) the way redis-cli --cluster reshard does, while clients keep writing. */
  reshardSlot: (slot: number, toPort?: number) => Promise<{ from: ClusterNode, to: ClusterNode, keys: number }>
  /** A whole-cluster outage: every node killed -9. */
  stopAll: () => Promise<void>
  /** Every node started again on its port and directory; resolves when the cluster is whole again (see settled). */
  startAll: () => Promise<void>
  /** Resolves when every live node says cluster_state:ok, sees every other live node healthy and every replica is linked to its master. */
  settled: () => Promise<void>
  /** Per master (the `masters` array), the CPU seconds its current process used (utime+stime), for benchmarks. */
  cpuSeconds: () => number[]
}

/** AOF fsync policy: `always` (the default: no acknowledged write is lost to a kill -9), or `everysec` / `no` for benchmarks. */
export type AppendFsync = 'always' | 'everysec' | 'no'

export interface ClusterOptions {
  masters?: number
  replicasPerMaster?: number
  appendfsync?: AppendFsync
}

interface NodeLine { id: string, port: number, flags: string[], masterId: string, slots: Array<[number, number]> }

const SLOTS = 16384
/** Polling interval of the waits below: they have no deadline (tap's test timeout reports one that never ends). */
const POLL_MS = 50
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/** Parses CLUSTER NODES; slots being imported/migrated (`[slot->-id]`) are left out: they still belong to their owner. */
export function parseClusterNodes (text: string): NodeLine[] {
  return text.split('\n').filter(Boolean).map(line => {
    const [id, address, flags, masterId, , , , , ...slots] = line.split(' ')
    const port = Number(address.slice(address.lastIndexOf(':') + 1, address.indexOf('@') === -1 ? undefined : address.indexOf('@')))
    return {
      id,
      port,
      flags: flags.split(','),
      masterId,
      slots: slots.filter(s => !s.startsWith('[')).map(s => {
        const [lo, hi] = s.split('-').map(Number)
        return [lo, hi ?? lo] as [number, number]
      })
    }
  })
}

function ownerOf (lines: NodeLine[], slot: number): NodeLine | undefined {
  return lines.find(l => l.flags.includes('master') && l.slots.some(([lo, hi]) => slot >= lo && slot <= hi))
}

/** CPU seconds (utime + stime, CLK_TCK = 100) of a process from /proc/<pid>/stat; 0 once it is gone. */
export function processCpuSeconds (pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // the command name may hold spaces: count fields after its closing parenthesis (utime and stime are fields 14 and 15)
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

/**
 * Every node process still running: killed when this process exits without
 * its teardowns (a test that timed out, a bench that threw), so no orphan
 * cluster keeps gossiping on the machine. process.kill is synchronous, as an
 * exit handler must be.
 */
const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const proc of running) {
    try { proc.kill('SIGKILL') } catch {}
  }
})

async function uniqueFreePort (taken: Set<number>): Promise<number> {
  for (;;) {
    const port = await freePort()
    if (!taken.has(port)) {
      taken.add(port)
      return port
    }
  }
}

async function clusterNode (t: TestContext, port: number, busPort: number, appendfsync: AppendFsync): Promise<ClusterNode> {
  const dir = tempDir(t, 'switchboard-rcluster-')
  let proc: ChildProcess | null = null
  let exited: Promise<void> = Promise.resolve()
  const alive = () => proc !== null && proc.exitCode === null && proc.signalCode === null
  const start = async () => {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
      '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(busPort),
      // a node learns its own address from the first MEET: a lone master (one shard) would tell clients an empty host
      '--cluster-announce-ip', '127.0.0.1',
      // a small node timeout makes failovers take about a second; validity factor 0 lets a replica take over even after an outage
      '--cluster-node-timeout', '1000', '--cluster-replica-validity-factor', '0',
      // a master waits 5 s by default before it streams a replica its first copy, for more replicas to share it
      '--repl-diskless-sync-delay', '0',
      '--appendonly', 'yes', '--appendfsync', appendfsync, '--save', '', '--logfile', ''], { stdio: 'ignore', cwd: dir })
    const p = proc
    running.add(p)
    exited = new Promise(resolve => p.once('exit', () => { running.delete(p); resolve() }))
    await listening(port, p)
  }
  const kill = async () => {
    if (alive()) {
      proc!.kill('SIGKILL')
      await exited
    }
  }
  const cli = (...args: string[]) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim()
  const run = (...args: Array<string | number>) => new Promise<string>((resolve, reject) => {
    execFile('redis-cli', ['-p', String(port), ...args.map(String)], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (err, stdout) => {
      if (err) reject(err)
      else resolve(stdout.trim())
    })
  })
  await start()
  t.teardown(kill)
  const node: ClusterNode = {
    port,
    busPort,
    dir,
    id: cli('CLUSTER', 'MYID'),
    get pid () { return proc?.pid ?? 0 },
    alive,
    kill,
    restart: start,
    cli,
    run
  }
  return node
}

async function ok (node: ClusterNode, ...args: Array<string | number>): Promise<void> {
  const out = await node.run(...args)
  if (out !== 'OK') throw new Error(`redis-cli -p ${node.port} ${args.join(' ')}: ${out}`)
}

/**
 * A real Redis Cluster on free ports of 127.0.0.1: `masters` masters with
 * `replicasPerMaster` replicas each, every node with AOF fsynced on every
 * write (unless `appendfsync` says otherwise) and killed at teardown. Three masters or more are joined with
 * `redis-cli --cluster create`; fewer (which redis-cli refuses, and the shard
 * bench needs) by hand with ADDSLOTSRANGE, MEET and REPLICATE. Resolves once
 * every node says cluster_state:ok and every replica is linked.
 */
export async function startRedisCluster (t: TestContext, { masters = 3, replicasPerMaster = 1, appendfsync = 'always' }: ClusterOptions = {}): Promise<RedisCluster> {
  const taken = new Set<number>()
  const count = masters * (1 + replicasPerMaster)
  const created: ClusterNode[] = await Promise.all(Array.from({ length: count }, async () =>
    clusterNode(t, await uniqueFreePort(taken), await uniqueFreePort(taken), appendfsync)))

  const byPort = (port: number): ClusterNode => {
    const node = created.find(n => n.port === port)
    if (!node) throw new Error(`no node of this cluster on port ${port}`)
    return node
  }
  const viewer = (): ClusterNode => {
    const node = created.find(n => n.alive())
    if (!node) throw new Error('every node of the cluster is down')
    return node
  }
  const live = () => created.filter(n => n.alive())

  /** `agreeOnRoles`: also wait until every live node agrees on each live node's role and master (at creation: see below). */
  const settled = async (agreeOnRoles = false) => {
    for (;;) {
      const nodes = live()
      const alivePorts = new Set(nodes.map(n => n.port))
      const checks = await Promise.all(nodes.map(async n => {
        const [info, view, replication] = await Promise.all([n.run('CLUSTER', 'INFO'), n.run('CLUSTER', 'NODES'), n.run('INFO', 'replication')])
        const lines = parseClusterNodes(view)
        const healthy = lines.length === created.length && lines.every(l => !l.flags.includes('handshake') && !l.flags.includes('noaddr') &&
          (!alivePorts.has(l.port) || (!l.flags.includes('fail') && !l.flags.includes('fail?'))))
        const linked = !replication.includes('role:slave') || replication.includes('master_link_status:up')
        // each live node's role and master as this node sees them: a role changed by `CLUSTER REPLICATE` reaches the others by gossip
        const roles = lines.filter(l => alivePorts.has(l.port)).map(l => `${l.port}:${l.flags.includes('slave') ? `slave of ${l.masterId}` : 'master'}`).sort().join(',')
        return info.includes('cluster_state:ok') && healthy && linked ? roles : null
      }))
      // settled once every node is healthy and, when asked, all of them agree on who is master and who replicates whom
      if (checks.every(c => c !== null && (!agreeOnRoles || c === checks[0]))) return
      await sleep(POLL_MS)
    }
  }

  if (masters >= 3) {
    await new Promise<void>((resolve, reject) => {
      execFile('redis-cli', ['--cluster', 'create', ...created.map(n => `127.0.0.1:${n.port}`),
        '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'], { encoding: 'utf8' }, (err, stdout) => {
        if (err || !stdout.includes('All 16384 slots covered')) reject(new Error(`redis-cli --cluster create failed: ${err?.message ?? ''}\n${stdout}`))
        else resolve()
      })
    })
  } else {
    // redis-cli --cluster create wants three masters at least: the same steps by hand
    const first = created.slice(0, masters)
    const per = SLOTS / masters
    for (let i = 0; i < masters; i++) {
      const lo = Math.round(i * per)
      const hi = i === masters - 1 ? SLOTS - 1 : Math.round((i + 1) * per) - 1
      await ok(first[i], 'CLUSTER', 'ADDSLOTSRANGE', lo, hi)
    }
    // distinct epochs before they meet, as redis-cli does, so no collision has to be resolved
    for (let i = 0; i < created.length; i++) await ok(created[i], 'CLUSTER', 'SET-CONFIG-EPOCH', i + 1)
    for (const n of created.slice(1)) await ok(created[0], 'CLUSTER', 'MEET', '127.0.0.1', n.port, n.busPort)
    for (;;) {
      const views = await Promise.all(created.map(n => n.run('CLUSTER', 'NODES')))
      if (views.every(v => {
        const lines = parseClusterNodes(v)
        return lines.length === created.length && lines.every(l => !l.flags.includes('handshake') && !l.flags.includes('noaddr'))
      })) break
      await sleep(POLL_MS)
    }
    const replicas = created.slice(masters)
    for (let i = 0; i < replicas.length; i++) await ok(replicas[i], 'CLUSTER', 'REPLICATE', first[i % masters].id)
  }
  // the roles are read from one node's view below: wait until every node's view says what redis-cli made of them
  await settled(true)

  // roles as the cluster assigned them; masters in slot order
  const lines = parseClusterNodes(created[0].cli('CLUSTER', 'NODES'))
  const firstSlot = (l: NodeLine) => Math.min(...l.slots.map(([lo]) => lo))
  const masterNodes = lines.filter(l => l.flags.includes('master')).sort((a, b) => firstSlot(a) - firstSlot(b)).map(l => byPort(l.port))
  const replicaNodes = lines.filter(l => l.flags.includes('slave')).map(l => byPort(l.port))
  const all = [...masterNodes, ...replicaNodes]

  const masterOf = (slot: number): ClusterNode => {
    const owner = ownerOf(parseClusterNodes(viewer().cli('CLUSTER', 'NODES')), slot)
    if (!owner) throw new Error(`no master owns slot ${slot}`)
    return byPort(owner.port)
  }

  const killMasterOf = async (slot: number) => {
    const old = masterOf(slot)
    const standby = parseClusterNodes(old.cli('CLUSTER', 'NODES')).filter(l => l.masterId === old.id && byPort(l.port).alive())
    if (standby.length === 0) throw new Error(`the master of slot ${slot} (port ${old.port}) has no live replica to take over`)
    const started = performance.now()
    await old.kill()
    for (;;) {
      const nodes = live()
      const [views, infos] = await Promise.all([
        Promise.all(nodes.map(n => n.run('CLUSTER', 'NODES'))),
        Promise.all(nodes.map(n => n.run('CLUSTER', 'INFO')))
      ])
      const owners = views.map(v => ownerOf(parseClusterNodes(v), slot)?.port)
      if (owners[0] !== undefined && owners[0] !== old.port && owners.every(p => p === owners[0]) &&
        infos.every(i => i.includes('cluster_state:ok'))) {
        return { promoted: byPort(owners[0]), ms: Math.round(performance.now() - started) }
      }
      await sleep(POLL_MS)
    }
  }

  const reshardSlot = async (slot: number, toPort?: number) => {
    const from = masterOf(slot)
    let to: ClusterNode
    if (toPort !== undefined) to = byPort(toPort)
    else {
      const current = parseClusterNodes(from.cli('CLUSTER', 'NODES'))
        .filter(l => l.flags.includes('master') && !l.flags.includes('fail') && l.slots.length > 0)
        .map(l => l.port).sort((a, b) => a - b)
      if (current.length < 2) throw new Error('reshardSlot needs a second master')
      to = byPort(current[(current.indexOf(from.port) + 1) % current.length])
    }
    if (to === from) return { from, to, keys: 0 }
    await ok(to, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id)
    await ok(from, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id)
    // while MIGRATING, the source answers for keys it still has and sends the rest (new keys too) to the target with ASK: it only shrinks
    let keys = 0
    for (;;) {
      const batch = (await from.run('CLUSTER', 'GETKEYSINSLOT', slot, 100)).split('\n').filter(Boolean)
      if (batch.length === 0) break
      const out = await from.run('MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', ...batch)
      if (out !== 'OK' && out !== 'NOKEY') throw new Error(`MIGRATE of slot ${slot} from ${from.port} to ${to.port}: ${out}`)
      keys += batch.length
    }
    await ok(to, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    await ok(from, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    const others = parseClusterNodes(to.cli('CLUSTER', 'NODES'))
      .filter(l => l.flags.includes('master') && !l.flags.includes('fail') && l.port !== from.port && l.port !== to.port)
    for (const l of others) {
      const n = byPort(l.port)
      if (n.alive()) await ok(n, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    }
    // replicas learn it by gossip: done when every live node agrees
    for (;;) {
      const views = await Promise.all(live().map(n => n.run('CLUSTER', 'NODES')))
      if (views.every(v => ownerOf(parseClusterNodes(v), slot)?.port === to.port)) break
      await sleep(POLL_MS)
    }
    return { from, to, keys }
  }

  const stopAll = async () => {
    // every SIGKILL sent before any wait, so no replica starts a failover meanwhile
    await Promise.all(created.map(n => n.kill()))
  }
  const startAll = async () => {
    await Promise.all(created.filter(n => !n.alive()).map(n => n.restart()))
    await settled()
  }

  return {
    nodes: masterNodes.map(n => `127.0.0.1:${n.port}`).join(','),
    masters: masterNodes,
    replicas: replicaNodes,
    all,
    slotOf: (key: string) => Number(viewer().cli('CLUSTER', 'KEYSLOT', key)),
    masterOf,
    killMasterOf,
    reshardSlot,
    stopAll,
    startAll,
    settled,
    cpuSeconds: () => masterNodes.map(n => processCpuSeconds(n.pid))
  }
}
