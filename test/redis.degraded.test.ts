import t from 'tap'
import { requestJson, waitFor } from './support/helper.js'
import { startServer } from './support/process.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'

t.test('Redis dies mid-traffic and comes back: degraded, then ok, nothing acknowledged lost', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...redis.env, RATE_LIMIT_MAX: '10000', WS_MESSAGES_PER_SECOND: '1000', ROOM_HISTORY_SIZE: '5000' }
  // child processes: a crash or an unhandled rejection would show as an exit
  const a = await startServer(t, env)
  const b = await startServer(t, env)
  const alice = await TestClient.connect(a.wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(b.wsUrl, { clientId: 'bob' })
  t.teardown(() => Promise.all([alice.close(), bob.close()]))
  await alice.request({ type: 'join', room: 'r' })
  await bob.request({ type: 'join', room: 'r' })

  // alice publishes every 20 ms throughout; every ack is recorded
  const acked: string[] = []
  const failures: string[] = []
  const traffic = { running: true }
  const publishing = (async () => {
    let i = 0
    while (traffic.running) {
      const reply = await alice.request({ type: 'publish', room: 'r', data: i++ }, 8000)
      if (reply.type === 'ack') acked.push(reply.messageId)
      else failures.push(reply.code)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  })()

  await waitFor(() => acked.length >= 5, 'traffic before the outage')
  await redis.kill()
  const downAt = Date.now()

  await waitFor(async () => (await requestJson(`${a.url}/api/status`)).body.status === 'degraded', 'status degraded', 5000)
  const status = await requestJson(`${a.url}/api/status`)
  t.match(status.body, { status: 'degraded', redis: { enabled: true, status: 'down' } })
  t.equal((await requestJson(`${b.url}/ready`)).status, 503, '/ready answers 503')

  const started = Date.now()
  const refused = await alice.request({ type: 'publish', room: 'r', data: 'during outage' }, 8000)
  const tookMs = Date.now() - started
  t.match(refused, { type: 'error', code: 'unavailable' }, 'a request that needs Redis gets unavailable')
  t.ok(tookMs < 5000, `and gets it without waiting for the 5 s command timeout (${tookMs} ms)`)
  const dm = await requestJson(`${a.url}/api/send`, 'POST', { from: 'ops', to: 'nobody-here', text: 'x' })
  t.equal(dm.status, 503, 'POST /api/send to a client elsewhere answers 503')
  t.ok(alice.open && bob.open, 'local connections stay open')
  t.match(await alice.request({ type: 'ping' }), { type: 'pong' }, 'and are served')

  const wait = 3000 - (Date.now() - downAt)
  if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
  await redis.restart()
  await waitFor(async () => (await requestJson(`${a.url}/api/status`)).body.status === 'ok', 'A back to ok', 15000)
  await waitFor(async () => (await requestJson(`${b.url}/api/status`)).body.status === 'ok', 'B back to ok', 15000)
  t.equal((await requestJson(`${a.url}/ready`)).status, 200, '/ready answers 200 again')

  // messages flow across instances again (the room subscription was restored)
  const ackedBeforeRecovery = acked.length
  await waitFor(() => acked.length >= ackedBeforeRecovery + 10, 'traffic after the outage', 10000)
  traffic.running = false
  await publishing
  const ack = await bob.request({ type: 'publish', room: 'r', data: 'after' })
  t.match(ack, { type: 'ack' })
  await alice.waitFor(m => m.type === 'room_message' && m.messageId === ack.messageId, 'bob\'s message on A', 5000)
  const sent = await bob.request({ type: 'send', to: 'alice', text: 'direct, after' })
  t.match(sent, { type: 'ack', delivered: 1 })
  await alice.waitFor(m => m.type === 'message' && m.text === 'direct, after', 'a direct message across instances')

  t.ok(failures.length > 0, `some publishes failed during the outage (${failures.length}) and were not acknowledged`)
  const stored = await TestClient.connect(b.wsUrl, { clientId: 'auditor' })
  t.teardown(() => stored.close())
  const joined = await stored.request({ type: 'join', room: 'r', since: 0 })
  const kept = new Set(joined.missed.map((m: Record<string, any>) => m.messageId))
  const lost = acked.filter(id => !kept.has(id))
  t.same(lost, [], `every one of the ${acked.length} acknowledged messages is in the room history`)
  const offsets = joined.missed.map((m: Record<string, any>) => m.offset)
  t.same(offsets, Array.from({ length: offsets.length }, (_, i) => offsets[0] + i), 'offsets stay contiguous')

  t.equal(a.proc.exitCode, null, 'instance A never exited')
  t.equal(b.proc.exitCode, null, 'instance B never exited')
  t.notMatch(a.stderr() + b.stderr(), /Unhandled|unhandled/, 'no unhandled rejection')
})

t.test('Redis answers but refuses writes (out of memory): /ready 503 naming the cause until this instance is written again', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const a = await startServer(t, { ...redis.env, REDIS_INSTANCE_TTL_MS: '3000' })
  t.equal((await fetch(`${a.url}/ready`)).status, 200, 'ready once started')
  t.match((await requestJson(`${a.url}/api/status`)).body.redis, { status: 'ready', registered: true })

  redis.cli('CONFIG', 'SET', 'maxmemory', '1')
  t.teardown(() => redis.cli('CONFIG', 'SET', 'maxmemory', '0'))
  // the next heartbeat cannot be written: the instance would vanish for its peers at the end of its TTL
  await waitFor(async () => (await fetch(`${a.url}/ready`)).status === 503, '/ready 503 while writes are refused', 15000, 100)
  const status = (await requestJson(`${a.url}/api/status`)).body
  t.match(status, { status: 'degraded', redis: { enabled: true, status: 'ready', registered: false } }, 'connected, not registered')
  t.match(status.problems, [/^redis: redis is reachable but this instance's entries are not written yet \(.*OOM/], 'the problem names the cause')
  t.ok(a.logs().some(l => l.event === 'redis.restore_failed' && /OOM/.test(l.reason)), 'and the log says it')

  redis.cli('CONFIG', 'SET', 'maxmemory', '0')
  await waitFor(async () => (await fetch(`${a.url}/ready`)).status === 200, '/ready 200 once this instance is written again', 15000, 100)
  t.match((await requestJson(`${a.url}/api/status`)).body, { status: 'ok', redis: { status: 'ready', registered: true } })
  t.ok(redis.cli('EXISTS', `sb:instance:${String(a.logs().find(l => l.event === 'redis.connected')?.serverId)}`) === '1', 'its heartbeat key is back')
})
