import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('ping gets a pong with an ISO timestamp and the same id', async t => {
  const { wsUrl } = await build(t)
  const c = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => c.close())
  const pong = await c.request({ type: 'ping' })
  t.equal(pong.type, 'pong')
  t.match(pong.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
})

t.test('welcome names the client, connection, server and limits', async t => {
  const { wsUrl } = await build(t, { HEARTBEAT_INTERVAL_MS: '1234' })
  const c = await TestClient.connect(wsUrl, { clientId: 'bob@example.com' })
  t.teardown(() => c.close())
  t.equal(c.welcome.clientId, 'bob@example.com')
  t.type(c.welcome.connectionId, 'string')
  t.type(c.welcome.serverId, 'string')
  t.equal(c.welcome.heartbeatIntervalMs, 1234)
  t.equal(c.welcome.limits.maxPayload, 65536)
  const anon = await TestClient.connect(wsUrl)
  t.teardown(() => anon.close())
  t.match(anon.welcome.clientId, /^anon-/, 'a client without clientId gets a generated one')
})

t.test('a direct message reaches every connection of the recipient and is acknowledged', async t => {
  const { wsUrl } = await build(t)
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const bob1 = await TestClient.connect(wsUrl, { clientId: 'bob' })
  const bob2 = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => Promise.all([alice.close(), bob1.close(), bob2.close()]))
  const ack = await alice.request({ type: 'send', to: 'bob', text: 'hello' })
  t.equal(ack.type, 'ack')
  t.equal(ack.delivered, 2)
  t.equal(ack.queued, false)
  for (const bob of [bob1, bob2]) {
    const m = await bob.next('message')
    t.same({ from: m.from, to: m.to, text: m.text, messageId: m.messageId }, { from: 'alice', to: 'bob', text: 'hello', messageId: ack.messageId })
  }
})

t.test('messages to an offline client are queued and delivered after its welcome, oldest first', async t => {
  const { wsUrl, url } = await build(t)
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  for (let i = 1; i <= 3; i++) {
    const ack = await alice.request({ type: 'send', to: 'carol', text: `m${i}` })
    t.same([ack.delivered, ack.queued], [0, true])
  }
  const res = await fetch(`${url}/api/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ from: 'svc', to: 'carol', text: 'm4' }) })
  t.same(((await res.json()) as any).queued, true)

  const carol = await TestClient.connect(wsUrl, { clientId: 'carol' })
  t.teardown(() => carol.close())
  t.equal(carol.received[0].type, 'welcome', 'welcome comes first')
  const texts = []
  for (let i = 0; i < 4; i++) texts.push((await carol.next('message')).text)
  t.same(texts, ['m1', 'm2', 'm3', 'm4'])

  const again = await TestClient.connect(wsUrl, { clientId: 'carol' })
  t.teardown(() => again.close())
  await again.request({ type: 'ping' })
  t.equal(again.all('message').length, 0, 'a queued message is delivered once')
})

t.test('POST /api/send and /api/v1/send deliver to a connected client', async t => {
  const { wsUrl, url } = await build(t)
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => bob.close())
  for (const prefix of ['/api', '/api/v1']) {
    const res = await fetch(`${url}${prefix}/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ from: 'backend', to: 'bob', text: `via ${prefix}` }) })
    t.equal(res.status, 200)
    const body = await res.json() as any
    t.match(body, { ok: true, delivered: 1, queued: false, messageId: String })
    const m = await bob.next('message')
    t.equal(m.text, `via ${prefix}`)
    t.equal(m.messageId, body.messageId)
  }
})

t.test('POST /api/send rejects missing, empty and oversized fields with 400', async t => {
  const { url } = await build(t)
  const cases = [
    { to: 'bob', text: 'x' },
    { from: 'a', text: 'x' },
    { from: 'a', to: 'bob' },
    { from: '', to: 'bob', text: 'x' },
    { from: 'a', to: 'bob', text: '' },
    { from: 'a', to: 'b'.repeat(65), text: 'x' },
    { from: 'a', to: 'bob', text: 'x'.repeat(32769) },
    { from: 'a', to: 'has space', text: 'x' }
  ]
  for (const body of cases) {
    const res = await fetch(`${url}/api/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    t.equal(res.status, 400, JSON.stringify(body).slice(0, 80))
    const err = await res.json()
    t.match(err, { statusCode: 400, error: 'Bad Request', message: String })
  }
  const bad = await fetch(`${url}/api/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{not json' })
  t.equal(bad.status, 400)
})
