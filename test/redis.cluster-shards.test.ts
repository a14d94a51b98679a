import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions } from './support/redis-server.js'
import { startRedisCluster } from './support/redis-cluster.js'

/**
 * REDIS_CLUSTER_NODES with rooms on more than one shard, all used at once:
 * joins and publishes of rooms whose keys live on different masters are sent
 * in the same tick. With ioredis' auto-pipelining on, the store's scripts
 * called with their key count first (sbLoad, sbSetState) were grouped into
 * one pipeline whatever their keys' slots, and the cluster refused the whole
 * pipeline, so a burst of joins on two shards failed (a single-shard cluster
 * never shows it).
 */
t.test('joins, state and publishes of rooms on two shards at once', redisTestOptions(), async t => {
  const cluster = await startRedisCluster(t, { masters: 2, replicasPerMaster: 0 })
  const env = { REDIS_CLUSTER_NODES: cluster.nodes, RATE_LIMIT_MAX: '100000', WS_MESSAGES_PER_SECOND: '100000' }
  const a = await build(t, env)
  const b = await build(t, env)

  // rooms whose channel slot (`{room:<name>}`) falls on each master: 8 each
  const rooms: string[] = []
  const perMaster = new Map<number, number>()
  for (let i = 0; rooms.length < 16; i++) {
    const port = cluster.masterOf(cluster.slotOf(`{room:r${i}}`)).port
    if ((perMaster.get(port) ?? 0) >= 8) continue
    perMaster.set(port, (perMaster.get(port) ?? 0) + 1)
    rooms.push(`r${i}`)
  }
  t.equal(perMaster.size, 2, 'the rooms are on both masters')

  const alice = await TestClient.connect(a.wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(b.wsUrl, { clientId: 'bob' })
  t.teardown(() => Promise.all([alice, bob].map(c => c.close())))

  // every join sent before any answer: the instance loads all those rooms in the same tick
  const joins = await Promise.all(rooms.flatMap(room => [alice.request({ type: 'join', room }), bob.request({ type: 'join', room })]))
  t.same(joins.filter(r => r.type !== 'joined'), [], 'every join on both shards is answered joined')

  const updates = await Promise.all(rooms.map(room => alice.request({ type: 'update', room, patch: { room } })))
  t.same(updates.filter(r => r.type === 'error'), [], 'every state update on both shards is accepted')

  const acks = await Promise.all(rooms.map(room => alice.request({ type: 'publish', room, data: `to ${room}` })))
  t.same(acks.filter(r => r.type !== 'ack'), [], 'every publish on both shards is acknowledged')
  // only once every publish was acknowledged: otherwise the wait would end at tap's timeout, the failure is above
  if (acks.every(r => r.type === 'ack')) {
    await Promise.all(rooms.map(room => bob.waitFor(m => m.type === 'room_message' && m.room === room, `bob gets the message of ${room}`, Infinity, true)))
    t.pass('bob, on the other instance, got the message of every room')
  }

  const failed = [...a.logs(), ...b.logs()].filter(l => l.event === 'store.operation_failed')
  t.same(failed.map(l => l.err?.message), [], 'no store operation failed')
})
