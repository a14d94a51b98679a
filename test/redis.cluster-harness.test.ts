import t from 'tap'
import { Cluster } from 'ioredis'
import { waitFor, type TestContext } from './support/helper.js'
import { redisTestOptions } from './support/redis-server.js'
import { parseClusterNodes, startRedisCluster, type RedisCluster } from './support/redis-cluster.js'

/**
 * The local Redis Cluster the cluster-mode tests and the shard bench run on
 * (test/support/redis-cluster.ts): keys on every master, a master killed and
 * its replica promoted, a slot moved while a client writes to it, a
 * whole-cluster outage. Checked with a plain ioredis Cluster client, so a
 * broken harness fails here rather than as a puzzling Switchboard failure.
 */

function client (t: TestContext, cluster: RedisCluster): Cluster {
  const c = new Cluster(cluster.nodes.split(',').map(a => ({ host: '127.0.0.1', port: Number(a.split(':')[1]) })))
  t.teardown(() => c.disconnect())
  return c
}

/** GET through the client, retried until it answers: after a failover or an outage it reconnects and refreshes its slot map. */
async function readBack (c: Cluster, key: string): Promise<string | null> {
  let value: string | null = null
  await waitFor(async () => {
    try {
      value = await c.get(key)
      return true
    } catch {
      return false
    }
  }, `a read of ${key}`, Infinity, 50)
  return value
}

/** The replication offset of a node: a replica has what its master acknowledged once its offset reached the master's. */
function replOffset (node: { cli: (...a: string[]) => string }): number {
  return Number(/(?:master_repl_offset|slave_repl_offset):(\d+)/.exec(node.cli('INFO', 'replication'))?.[1] ?? -1)
}

t.test('three masters, three replicas: placement, failover, resharding under writes, whole outage', redisTestOptions(), async t => {
  const cluster = await startRedisCluster(t)
  t.equal(cluster.masters.length, 3)
  t.equal(cluster.replicas.length, 3)
  t.equal(cluster.nodes, cluster.masters.map(m => `127.0.0.1:${m.port}`).join(','))
  for (const node of cluster.all) t.match(node.cli('CLUSTER', 'INFO'), /cluster_state:ok/, `${node.port} says cluster_state:ok`)
  for (const m of cluster.masters) t.match(m.cli('INFO', 'replication'), /connected_slaves:1/, `master ${m.port} has its replica`)

  // one key on each master, written through the client and found on the node itself (no -c: a wrong node answers MOVED)
  const c = client(t, cluster)
  const keyOn = new Map<number, string>()
  for (let i = 0; keyOn.size < 3; i++) {
    const owner = cluster.masterOf(cluster.slotOf(`k${i}`))
    if (!keyOn.has(owner.port)) keyOn.set(owner.port, `k${i}`)
  }
  for (const [port, key] of keyOn) {
    await c.set(key, `v-${key}`)
    t.equal(cluster.all.find(n => n.port === port)!.cli('GET', key), `v-${key}`, `${key} is on master ${port}`)
  }

  // failover: the replica of the killed master owns its slots afterwards and has the key
  const [firstKey] = keyOn.values()
  const slot = cluster.slotOf(firstKey)
  const victim = cluster.masterOf(slot)
  const standby = cluster.replicas.find(r => parseClusterNodes(r.cli('CLUSTER', 'NODES')).find(l => l.flags.includes('myself'))!.masterId === victim.id)!
  await waitFor(() => replOffset(standby) >= replOffset(victim), 'the replica to have every write of its master', Infinity, 20)
  const { promoted, ms } = await cluster.killMasterOf(slot)
  t.equal(promoted, standby, 'the replica of the killed master took its slots')
  t.not(cluster.masterOf(slot), victim)
  t.comment(`failover took ${ms} ms (cluster-node-timeout 1000)`)
  t.equal(await readBack(c, firstKey), `v-${firstKey}`, 'the key is read back from the promoted replica')

  // resharding a slot while the client keeps writing to it: no write lost, old and new keys on the target
  const counter = '{moving}counter'
  const moving = cluster.slotOf(counter)
  await c.set(counter, '0')
  for (let i = 0; i < 50; i++) await c.set(`{moving}old-${i}`, String(i))
  const control = { stop: false }
  let incremented = 0
  let created = 0
  const writer = (async () => {
    while (!control.stop) {
      await c.incr(counter)
      incremented++
      await c.set(`{moving}new-${created}`, 'x')
      created++
    }
  })()
  await waitFor(() => incremented >= 20, 'writes before the move')
  const from = cluster.masterOf(moving)
  const atStart = incremented
  const { to, keys } = await cluster.reshardSlot(moving)
  const during = incremented
  await waitFor(() => incremented >= during + 20, 'writes after the move')
  control.stop = true
  await writer
  t.not(to, from)
  t.equal(cluster.masterOf(moving), to, 'the slot belongs to the target')
  t.ok(keys >= 51, `the move carried the slot's keys (${keys})`)
  t.ok(during > atStart, `writes went on during the move (${during - atStart} while it ran)`)
  t.equal(Number(await readBack(c, counter)), incremented, 'every acknowledged INCR is in the counter')
  t.equal(to.cli('GET', counter), String(incremented), 'the counter lives on the target itself')
  t.equal(to.cli('GET', `{moving}new-${created - 1}`), 'x', 'the last key created is on the target')
  t.equal(from.cli('CLUSTER', 'COUNTKEYSINSLOT', String(moving)), '0', 'nothing of the slot is left on the source')

  // a whole-cluster outage: everything kill -9, started again from the AOF
  await cluster.stopAll()
  t.ok(cluster.all.every(n => !n.alive()))
  await cluster.startAll()
  for (const node of cluster.all) t.match(node.cli('CLUSTER', 'INFO'), /cluster_state:ok/, `${node.port} is ok after the outage`)
  t.equal(await readBack(c, firstKey), `v-${firstKey}`)
  t.equal(Number(await readBack(c, counter)), incremented, 'the counter survived the outage (AOF, fsync always)')
  t.equal(cluster.masterOf(moving), to, 'the moved slot stays moved')
  const cpu = cluster.cpuSeconds()
  t.equal(cpu.length, 3)
  t.ok(cpu.every(s => Number.isFinite(s) && s >= 0), `cpuSeconds reads /proc (${cpu.join(', ')})`)
})

t.test('one and two masters (the shard bench sizes) are joined by hand and serve keys', redisTestOptions(), async t => {
  for (const [masters, replicasPerMaster] of [[1, 0], [2, 1]]) {
    const cluster = await startRedisCluster(t, { masters, replicasPerMaster })
    t.equal(cluster.masters.length, masters)
    t.equal(cluster.replicas.length, masters * replicasPerMaster)
    const c = client(t, cluster)
    for (let i = 0; i < 20; i++) await c.set(`k${i}`, String(i))
    const owners = new Set(Array.from({ length: 20 }, (_, i) => cluster.masterOf(cluster.slotOf(`k${i}`)).port))
    t.equal(owners.size, masters, `${masters} master(s) hold the keys`)
    t.equal(await c.get('k7'), '7')
    const before = cluster.cpuSeconds()
    // CPU time moves in 10 ms ticks: work until one shows
    await waitFor(async () => {
      for (let i = 0; i < 200; i++) await c.incr('busy')
      return cluster.cpuSeconds().some((s, i) => s > before[i])
    }, 'cpuSeconds to grow with work')
    t.pass('cpuSeconds grows with work')
  }
})
