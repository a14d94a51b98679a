import t from 'tap'
import { build, waitFor } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('a peer that stops answering pings is terminated and frees its slot', async t => {
  const { wsUrl, app, logs } = await build(t, { HEARTBEAT_INTERVAL_MS: '250' })
  const alive = await TestClient.connect(wsUrl, { clientId: 'alive' })
  // taken before the dead peer connects, so before the server first saw it (its session's lastSeen, same clock):
  // however late this test resumes after the connect, the silence measured from here is at least the server's
  const started = Date.now()
  const dead = await TestClient.connect(wsUrl, { clientId: 'dead', autoPong: false })
  t.teardown(() => alive.close())
  t.equal(app.limits.total, 2)
  const closed = await dead.closed
  const took = Date.now() - started
  t.equal(closed.code, 1006, 'terminated without a close handshake')
  t.ok(took > 500, `not before two silent intervals of 250 ms (${took} ms)`)
  t.ok(alive.open, 'a peer that answers pings stays connected')
  await waitFor(() => app.limits.total === 1 && app.sessions.size === 1, 'the dead peer slot to be freed')
  t.match(logs().find(l => l.event === 'heartbeat.sweep' && (l.terminated as number) > 0), { terminated: 1 }, 'the sweep logs how many it cleaned')
  await new Promise(resolve => setTimeout(resolve, 1000))
  t.ok(alive.open, 'still connected after several intervals')
})

t.test('application messages count as activity', async t => {
  const { wsUrl } = await build(t, { HEARTBEAT_INTERVAL_MS: '100' })
  const c = await TestClient.connect(wsUrl, { autoPong: false })
  t.teardown(() => c.close())
  const timer = setInterval(() => c.send({ type: 'ping' }), 50)
  await new Promise(resolve => setTimeout(resolve, 500))
  clearInterval(timer)
  t.ok(c.open, 'a client that keeps sending is not dropped even without pongs')
})
