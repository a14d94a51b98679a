import t from 'tap'
import { build, waitFor } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { sentinelTestOptions, startSentinelGroup } from './support/redis-server.js'

/**
 * REDIS_SENTINELS: a real failover. One master, one replica, three
 * Sentinels; two instances publish to one room without pause while the
 * master is killed with SIGKILL. The replica is promoted, both instances
 * follow it, and every acknowledged write is looked for in the new master (the figure is
 * printed: replication is asynchronous, see docs/redis.md).
 */
t.test('Sentinel: kill -9 the master while clients publish; the replica takes over', sentinelTestOptions(), async t => {
  const group = await startSentinelGroup(t)
  const env = {
    REDIS_SENTINELS: group.sentinelList,
    REDIS_SENTINEL_NAME: group.name,
    ROOM_HISTORY_SIZE: '1000000',
    RATE_LIMIT_MAX: '100000',
    WS_MESSAGES_PER_SECOND: '100000',
    REDIS_INSTANCE_TTL_MS: '3000'
  }
  const a = await build(t, env)
  const b = await build(t, env)
  t.match(a.logs().find(l => l.event === 'redis.connected'), { mode: 'sentinel' })

  const clients = [
    await TestClient.connect(a.wsUrl, { clientId: 'pa' }),
    await TestClient.connect(b.wsUrl, { clientId: 'pb' })
  ]
  const watcher = await TestClient.connect(b.wsUrl, { clientId: 'watcher' })
  t.teardown(() => Promise.all([...clients, watcher].map(c => c.close())))
  for (const c of [...clients, watcher]) await c.request({ type: 'join', room: 'f' })

  const acked: Array<{ offset: number, data: string, at: number }> = []
  let refused = 0
  let killedAt = Infinity
  const control = { stop: false }
  const publishers = clients.map(async (c, n) => {
    for (let i = 0; !control.stop; i++) {
      const data = `p${n}-${i}`
      const reply = await c.request({ type: 'publish', room: 'f', data })
      if (reply.type === 'ack') acked.push({ offset: reply.offset, data, at: Date.now() })
      else {
        t.equal(reply.code, 'unavailable', 'a publish during the failover is refused as unavailable, never lost silently')
        refused++
        // the instance is without Redis: pace the retries (not a synchronisation: the loop ends on acks, below)
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    }
  })

  await waitFor(() => acked.length >= 200, '200 acknowledged publishes before the kill')
  const before = acked.length
  killedAt = Date.now()
  await group.master.kill()
  await waitFor(() => group.masterPort() === group.replica.port, 'the Sentinels to promote the replica', Infinity, 50)
  const promotedAt = Date.now()
  // both instances write to the new master
  await waitFor(() => acked.filter(x => x.at > promotedAt && x.data.startsWith('p0-')).length >= 100 &&
    acked.filter(x => x.at > promotedAt && x.data.startsWith('p1-')).length >= 100, '100 acknowledged publishes from each instance after the promotion')
  control.stop = true
  await Promise.all(publishers)

  // every acknowledged write, looked for in the new master's history of the room
  const history = new Map<number, string>()
  for (const line of group.replica.cli('LRANGE', 'sb:room:f:history', '0', '-1').split('\n').filter(Boolean)) {
    const entry = JSON.parse(line) as { offset: number, data: string }
    history.set(entry.offset, entry.data)
  }
  const lost = acked.filter(x => history.get(x.offset) !== x.data)
  const offsets = acked.map(x => x.offset)
  const reused = offsets.length - new Set(offsets).size
  // replication is asynchronous (no WAIT): what the master acknowledged and had not yet sent to the replica is lost,
  // and a lost offset is given again to a later message. Measured, not asserted (docs/redis.md, Sentinel).
  t.comment(`SENTINEL FIGURES: acked ${acked.length} (${before} before the kill), refused ${refused} (unavailable); ` +
    `Sentinel promotion ${promotedAt - killedAt} ms after the kill; acknowledged writes missing from the new master: ${lost.length}; offsets acknowledged twice: ${reused}`)
  t.ok(acked.length > before + 200, 'writes are acknowledged again after the promotion, on both instances')

  // cross-instance delivery works on the new master: a publish on A reaches the watcher on B
  const last = await clients[0].request({ type: 'publish', room: 'f', data: 'after the failover' })
  t.match(last, { type: 'ack' })
  await watcher.waitFor(m => m.type === 'room_message' && m.data === 'after the failover', 'the message published after the failover on the other instance')
})
