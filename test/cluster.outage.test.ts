import type { Test } from 'tap'
import t from 'tap'
import { requestJson, waitFor } from './support/helper.js'
import { redisTestOptions } from './support/redis-server.js'
import { cluster, connect } from './support/cluster-instances.js'
import { TestClient } from './support/ws-client.js'

const TTL_MS = 3000
const BEAT_MS = TTL_MS / 3

/**
 * Invariant: after a Redis outage or restart, every instance's registrations
 * converge to the truth within 2 heartbeats of Redis being back (plus the
 * reconnect backoff, at most ~2.1 s); entries of connections that closed during
 * the outage are gone; no instance deletes a live peer's entries; per-client
 * limits are never stuck.
 */
async function outage (t: Test, keepData: boolean, downMs = 0): Promise<void> {
  // MAX_CONNECTIONS_PER_CLIENT counts by address: every client here is 127.0.0.1
  const { redis, instances: [a, b] } = await cluster(t, 2, { REDIS_INSTANCE_TTL_MS: String(TTL_MS), MAX_CONNECTIONS_PER_CLIENT: '3' })
  const live = await connect(t, b.wsUrl, 'live')
  const gone = [await TestClient.connect(a.wsUrl, { clientId: 'gone' }), await TestClient.connect(a.wsUrl, { clientId: 'gone' })]
  await live.request({ type: 'join', room: 'outage-room' })
  for (const c of gone) await c.request({ type: 'join', room: 'outage-room' })
  t.equal(redis.cli('HLEN', 'sb:presence:{room:outage-room}:u'), '2', 'two memberships before the outage')

  await redis.kill()
  for (const c of gone) await c.close()
  await waitFor(async () => (await requestJson(`${a.url}/api/status`)).body.connections.total === 0, 'A to see its connections closed', 5000, 100)
  // down longer than the TTL: every heartbeat key has expired when Redis comes back with the rest of its data
  if (downMs > 0) await new Promise(resolve => setTimeout(resolve, downMs))
  if (!keepData) redis.wipe()
  await redis.restart()
  const backAt = Date.now()

  const truth = () => {
    const slots = redis.cli('HVALS', 'sb:slots:127.0.0.1').split('\n').filter(Boolean).map(Number)
    return {
      slots: slots.reduce((x, y) => x + y, 0),
      goneConns: redis.cli('HLEN', 'sb:conns:gone'),
      liveConns: redis.cli('HVALS', 'sb:conns:live'),
      members: redis.cli('HKEYS', 'sb:presence:{room:outage-room}:u').split('\n').filter(Boolean).map(f => f.split('|')[1]).sort()
    }
  }
  const expected = { slots: 1, goneConns: '0', liveConns: '1', members: ['live'] }
  // both instances see Redis again (until then they answer upgrades with 503, as documented) and Redis holds the truth
  let last = { ready: [0, 0], truth: truth() }
  const converged = async () => {
    last = { ready: await Promise.all([a, b].map(async i => (await fetch(`${i.url}/ready`)).status)), truth: truth() }
    return last.ready.every(status => status === 200) && JSON.stringify(last.truth) === JSON.stringify(expected)
  }
  try {
    await waitFor(converged, `both instances ready and registrations converged to ${JSON.stringify(expected)}`, 15000, 100)
  } catch (err) {
    // what each instance said about Redis since the outage: whether it saw Redis back and restored, or why not
    const said = [a, b].map((i, n) => `${'AB'[n]}: ${JSON.stringify(i.logs().filter(l => String(l.event).startsWith('redis.') || String(l.event).startsWith('presence.')).slice(-12).map(l => [l.event, l.role ?? '', l.reason ?? '']))}`)
    throw new Error(`${(err as Error).message}; last seen: ${JSON.stringify(last)}; ${said.join('; ')}`)
  }
  const convergedMs = Date.now() - backAt
  t.ok(convergedMs <= 2100 + 2 * BEAT_MS + 1000, `converged ${convergedMs} ms after redis was back (reconnect backoff ≤ 2.1 s, then within 2 heartbeats of ${BEAT_MS} ms)`)

  // no instance deletes a live peer's entries: for 3 heartbeats, a message to `live` on B is delivered, never queued
  const sender = await connect(t, a.wsUrl, 'sender')
  const acks = []
  const until = Date.now() + 3 * BEAT_MS
  while (Date.now() < until) {
    acks.push(await sender.request({ type: 'send', to: 'live', text: `to live ${acks.length}` }))
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  t.same(acks.filter(ack => ack.delivered !== 1), [], `${acks.length} messages to a client on the live peer: all delivered`)
  t.same(JSON.parse(JSON.stringify(truth())), { ...expected, slots: 2 }, 'still the truth (the sender holds one slot more)')

  // the connections that closed during the outage left nothing behind
  t.match(await sender.request({ type: 'send', to: 'gone', text: 'for later' }), { delivered: 0, queued: true }, 'a message to a client with no connection is queued')
  t.same((await requestJson(`${a.url}/api/rooms/outage-room`)).body.members, ['live'], 'no ghost member')
  // the per-client limit counts only open connections: live + sender + 1 more fit, a 4th does not
  const third = await connect(t, a.wsUrl, 'gone')
  t.match(await third.next('message'), { text: 'for later' })
  await t.rejects(TestClient.connect(b.wsUrl, { clientId: 'fourth' }), /429/, 'the limit still holds')
}

t.test('Redis restarted with its data (AOF)', redisTestOptions(), async t => outage(t, true))
t.test('Redis restarted empty', redisTestOptions(), async t => outage(t, false))
t.test('Redis down longer than the instance TTL, restarted with its data', redisTestOptions(), async t => outage(t, true, TTL_MS + 500))

/**
 * Invariant: a peer's sweep that overlaps an instance's restore costs at most
 * a heartbeat. B stalls past its TTL; A sweeps it. As if B had rewritten its
 * entries while A's sweep was still removing them, B's heartbeat key is back
 * when B resumes, so B's beat alone would not tell it to write them again.
 */
t.test('a sweep that overlaps the swept instance\'s restore: its entries come back', redisTestOptions(), async t => {
  const { redis, instances: [a, b] } = await cluster(t, 2, { REDIS_INSTANCE_TTL_MS: String(TTL_MS) })
  const bId = String(b.logs().find(l => l.event === 'redis.connected')?.serverId)
  const live = await connect(t, b.wsUrl, 'live')
  await live.request({ type: 'join', room: 'overlap-room' })
  const members = async () => (await requestJson(`${a.url}/api/rooms/overlap-room`)).body.members
  await waitFor(async () => JSON.stringify(await members()) === '["live"]', 'A to see the member on B')

  b.proc.kill('SIGSTOP')
  let stopped = true
  t.teardown(() => { if (stopped) b.proc.kill('SIGCONT') })
  redis.cli('DEL', `sb:instance:${bId}`)
  await waitFor(() => a.logs().some(l => l.event === 'presence.instance_swept' && l.serverId === bId), 'A to sweep B', 15000, 100)
  const afterSweep = await requestJson(`${a.url}/api/rooms/overlap-room`)
  t.notOk(afterSweep.body.members?.includes('live'), `the sweep removed the member on B (A answered ${afterSweep.status})`)
  // what B's restore left behind, had it run while the sweep was under way: a fresh heartbeat key
  redis.cli('SET', `sb:instance:${bId}`, String(Date.now()), 'PX', String(10 * TTL_MS))
  b.proc.kill('SIGCONT')
  stopped = false

  await waitFor(async () => JSON.stringify(await members()) === '["live"]', 'B to write its member again', 15000, 100)
  t.pass('B wrote its entries again')
  const sender = await connect(t, a.wsUrl, 'sender')
  t.match(await sender.request({ type: 'send', to: 'live', text: 'after the sweep' }), { delivered: 1 }, 'a message from A reaches the client on B')
  t.match(await live.next('message'), { text: 'after the sweep' })
  t.equal((await fetch(`${b.url}/ready`)).status, 200, 'B is ready')
})
