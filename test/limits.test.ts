import t from 'tap'
import { build, waitFor } from './helper.js'
import { TestClient, tryUpgrade } from './ws-client.js'

// Every 127.0.0.x address is loopback on Linux, so each stands for a distinct client key.
const addr = (i: number) => `127.0.${Math.floor(i / 250)}.${(i % 250) + 2}`

t.test('with MAX_CONNECTIONS=50 the 51st client is refused with 503 and the others keep working', async t => {
  const { wsUrl, app, logs } = await build(t, { MAX_CONNECTIONS: '50', MAX_CONNECTIONS_PER_CLIENT: '3' })
  const clients: TestClient[] = []
  t.teardown(() => Promise.all(clients.map(c => c.close())))
  for (let i = 0; i < 50; i++) clients.push(await TestClient.connect(wsUrl, { localAddress: addr(i) }))
  t.equal(app.connections.size, 50)

  const refused = await tryUpgrade(wsUrl, { localAddress: addr(50) })
  t.equal(refused.status, 503)
  t.match(refused.body, { statusCode: 503, error: 'connection_limit_exceeded', scope: 'total', limit: 50, current: 50, message: String })

  const pong = await clients[0].request({ type: 'ping' })
  t.equal(pong.type, 'pong', 'existing connections are untouched')
  t.equal(app.connections.size, 50)
  const line = logs().find(l => l.event === 'connection.rejected')
  t.match(line, { reason: 'limit_total', limit: 50, current: 50, clientKey: addr(50) }, 'the rejection is logged with the current counts')
})

t.test('with MAX_CONNECTIONS_PER_CLIENT=3 the 4th connection from one client key gets 429', async t => {
  const { wsUrl, logs } = await build(t, { MAX_CONNECTIONS: '50', MAX_CONNECTIONS_PER_CLIENT: '3' })
  const mine: TestClient[] = []
  t.teardown(() => Promise.all(mine.map(c => c.close())))
  for (let i = 0; i < 3; i++) mine.push(await TestClient.connect(wsUrl, { localAddress: '127.0.9.9' }))
  const fourth = await tryUpgrade(wsUrl, { localAddress: '127.0.9.9' })
  t.equal(fourth.status, 429)
  t.match(fourth.body, { statusCode: 429, error: 'connection_limit_exceeded', scope: 'client', limit: 3, current: 3 })
  const other = await tryUpgrade(wsUrl, { localAddress: '127.0.9.10' })
  t.equal(other.status, 101, 'another client key is not affected')
  t.match(logs().find(l => l.event === 'connection.rejected'), { reason: 'limit_client', clientKey: '127.0.9.9', limit: 3, current: 3 })

  await mine.pop()!.close()
  await waitFor(async () => (await tryUpgrade(wsUrl, { localAddress: '127.0.9.9' })).status === 101, 'a slot to free up')
})

t.test('60 concurrent connects never exceed MAX_CONNECTIONS=50', async t => {
  const { wsUrl, app } = await build(t, { MAX_CONNECTIONS: '50', MAX_CONNECTIONS_PER_CLIENT: '3' })
  let peak = 0
  const sampler = setInterval(() => { peak = Math.max(peak, app.connections.size, app.limits.total) }, 1)
  const opened: TestClient[] = []
  t.teardown(() => Promise.all(opened.map(c => c.close())))
  const results = await Promise.all(Array.from({ length: 60 }, (_, i) =>
    TestClient.connect(wsUrl, { localAddress: addr(100 + i) }).then(c => { opened.push(c); return 101 }, (err: Error) => Number(/(\d{3})/.exec(err.message)?.[1] ?? 0))
  ))
  clearInterval(sampler)
  peak = Math.max(peak, app.connections.size, app.limits.total)
  t.equal(results.filter(s => s === 101).length, 50, 'exactly 50 accepted')
  t.equal(results.filter(s => s === 503).length, 10, 'the other 10 refused with 503')
  t.ok(peak <= 50, `never more than 50 slots held (peak ${peak})`)
})

t.test('counters return to zero when clients leave, cleanly or abruptly', async t => {
  const { wsUrl, app } = await build(t, { MAX_CONNECTIONS: '50', MAX_CONNECTIONS_PER_CLIENT: '3' })
  const clients: TestClient[] = []
  for (let i = 0; i < 9; i++) clients.push(await TestClient.connect(wsUrl, { localAddress: addr(200 + (i % 3)) }))
  t.equal(app.limits.total, 9)
  t.equal(app.limits.counter.clients, 3)
  await clients[0].close()
  clients[1].ws.terminate() // no close frame: an abrupt disconnect
  ;(clients[2].ws as any)._socket.destroy()
  for (const c of clients.slice(3)) c.ws.terminate()
  await waitFor(() => app.limits.total === 0 && app.connections.size === 0 && app.limits.counter.clients === 0, 'all counters to reach 0')
  t.equal(app.connections.clientCount, 0)
  const again = await TestClient.connect(wsUrl, { localAddress: addr(200) })
  t.equal(app.limits.total, 1, 'a returning client counts from zero again')
  await again.close()
})

t.test('a refused or invalid upgrade does not hold a slot', async t => {
  const { wsUrl, app } = await build(t, { MAX_CONNECTIONS: '2', CORS_ORIGINS: 'http://ok.test' })
  for (let i = 0; i < 5; i++) {
    t.equal((await tryUpgrade(wsUrl, { headers: { origin: 'http://evil.test' } })).status, 403)
    t.equal((await tryUpgrade(wsUrl, { query: { clientId: 'bad id!' } })).status, 400)
  }
  await waitFor(() => app.limits.total === 0, 'no slot held')
  const a = await TestClient.connect(wsUrl)
  const b = await TestClient.connect(wsUrl, { localAddress: '127.0.0.3' })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.equal(app.limits.total, 2)
})
