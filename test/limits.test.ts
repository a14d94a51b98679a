import t from 'tap'
import { build, waitFor } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'
import { connect, type Socket } from 'node:net'
import http from 'node:http'

// Every 127.0.0.x address is loopback on Linux, so each stands for a distinct client key.
const addr = (i: number) => `127.0.${Math.floor(i / 250)}.${(i % 250) + 2}`

t.test('with MAX_CONNECTIONS=50 the 51st client is refused with 503 and the others keep working', async t => {
  const { wsUrl, app, logs } = await build(t, { MAX_CONNECTIONS: '50', MAX_CONNECTIONS_PER_CLIENT: '3' })
  const clients: TestClient[] = []
  t.teardown(() => Promise.all(clients.map(c => c.close())))
  for (let i = 0; i < 50; i++) clients.push(await TestClient.connect(wsUrl, { localAddress: addr(i) }))
  t.equal(app.sessions.size, 50)

  const refused = await tryUpgrade(wsUrl, { localAddress: addr(50) })
  t.equal(refused.status, 503)
  t.match(refused.body, { statusCode: 503, error: 'connection_limit_exceeded', scope: 'total', limit: 50, current: 50, message: String })

  const pong = await clients[0].request({ type: 'ping' })
  t.equal(pong.type, 'pong', 'existing connections are untouched')
  t.equal(app.sessions.size, 50)
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
  const sampler = setInterval(() => { peak = Math.max(peak, app.sessions.size, app.limits.total) }, 1)
  const opened: TestClient[] = []
  t.teardown(() => Promise.all(opened.map(c => c.close())))
  const results = await Promise.all(Array.from({ length: 60 }, (_, i) =>
    TestClient.connect(wsUrl, { localAddress: addr(100 + i) }).then(c => { opened.push(c); return 101 }, (err: Error) => Number(/(\d{3})/.exec(err.message)?.[1] ?? 0))
  ))
  clearInterval(sampler)
  peak = Math.max(peak, app.sessions.size, app.limits.total)
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
  await waitFor(() => app.limits.total === 0 && app.sessions.size === 0 && app.limits.counter.clients === 0, 'all counters to reach 0')
  t.equal(app.sessions.clientCount, 0)
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

/** A socket that starts a request and never finishes its headers (slowloris). */
function slowHeaders (port: number, localAddress: string): Promise<{ socket: Socket, closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress })
    const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
    socket.on('error', () => {})
    socket.once('connect', () => {
      socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ')
      resolve({ socket, closed })
    })
    socket.once('error', reject)
  })
}

t.test('slow-header sockets: at most MAX_PENDING_CONNECTIONS are kept (the oldest go first), and a new WebSocket connects while 300 are open', async t => {
  const { wsUrl, port, app } = await build(t, { MAX_PENDING_CONNECTIONS: '40', MAX_PENDING_CONNECTIONS_PER_CLIENT: '4', PENDING_HEADERS_TIMEOUT_MS: '60000' })
  const slow: Array<{ socket: Socket, closed: Promise<void> }> = []
  t.teardown(() => { for (const s of slow) s.socket.destroy() })
  let closedByServer = 0
  for (let i = 0; i < 300; i++) {
    const s = await slowHeaders(port, addr(300 + Math.floor(i / 3)))
    s.closed.then(() => { closedByServer++ }, () => {})
    slow.push(s)
  }
  await waitFor(() => closedByServer >= 260, 'the server to close all but 40 slow sockets', 10000)
  t.ok(app.pendingConnections.size <= 40, `${app.pendingConnections.size} pending connections kept (cap 40)`)
  t.ok(slow.slice(-40).every(s => !s.socket.destroyed), 'the 40 newest are the ones kept')
  t.equal(app.pendingConnections.closed.evicted, 260)

  const started = Date.now()
  const c = await TestClient.connect(wsUrl, { localAddress: '127.0.7.7' })
  t.teardown(() => c.close())
  t.equal((await c.request({ type: 'ping' })).type, 'pong', `a new WebSocket connected in ${Date.now() - started} ms with the slow sockets open`)
  const status = await (await fetch(`${wsUrl.replace('ws:', 'http:').replace('/ws', '')}/api/status`)).json() as any
  t.match(status.pendingConnections, { max: 40, perClientMax: 4, closed: { evicted: Number } })
})

t.test('slow-header sockets from one address: more than MAX_PENDING_CONNECTIONS_PER_CLIENT are closed at once; other addresses are not affected', async t => {
  const { wsUrl, port, app, logs } = await build(t, { MAX_PENDING_CONNECTIONS_PER_CLIENT: '4', PENDING_HEADERS_TIMEOUT_MS: '60000' })
  const slow: Array<{ socket: Socket, closed: Promise<void> }> = []
  t.teardown(() => { for (const s of slow) s.socket.destroy() })
  for (let i = 0; i < 10; i++) slow.push(await slowHeaders(port, '127.0.8.8'))
  await Promise.all(slow.slice(4).map(s => s.closed))
  t.equal(app.pendingConnections.countOf('127.0.8.8'), 4, 'four kept')
  t.ok(slow.slice(0, 4).every(s => !s.socket.destroyed), 'the first four stay open')
  t.equal(app.pendingConnections.closed.refused, 6)
  t.match(logs().find(l => l.event === 'connection.pending_closed'), { level: 40, reason: 'refused', clientKey: '127.0.8.8', perClientLimit: 4 })
  const c = await TestClient.connect(wsUrl, { localAddress: '127.0.8.9' })
  t.teardown(() => c.close())
  t.ok(c.open, 'another address connects')
  // a connection that finished its headers no longer counts: the same address gets a WebSocket once it has one slot free
  slow[0].socket.destroy()
  await waitFor(() => app.pendingConnections.countOf('127.0.8.8') === 3, 'a slot to free up')
  const mine = await TestClient.connect(wsUrl, { localAddress: '127.0.8.8' })
  t.teardown(() => mine.close())
  t.equal(app.pendingConnections.countOf('127.0.8.8'), 3, 'the upgraded connection is not pending')
})

t.test('a connection that has not finished its headers within PENDING_HEADERS_TIMEOUT_MS is closed; a finished one is kept alive', async t => {
  const { port, app } = await build(t, { PENDING_HEADERS_TIMEOUT_MS: '300' })
  const started = Date.now()
  const s = await slowHeaders(port, '127.0.9.20')
  await s.closed
  const took = Date.now() - started
  t.ok(took >= 250, `closed after ${took} ms (timeout 300 ms)`)
  t.equal(app.pendingConnections.closed.timed_out, 1)

  // keep-alive: two requests on one socket, the second after the timeout has passed
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const get = () => new Promise<{ status: number, socket: unknown }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/health', agent }, res => { res.resume(); res.on('end', () => resolve({ status: res.statusCode ?? 0, socket: res.socket })) }).on('error', reject)
  })
  const first = await get()
  await new Promise(resolve => setTimeout(resolve, 600))
  const second = await get()
  t.equal(second.status, 200)
  t.equal(second.socket, first.socket, 'the same socket served both: finishing its headers took it out of the pending set')
})

t.test('a peer TRUST_PROXY trusts is not capped per address before its headers (it carries many clients), only in the total', async t => {
  const { port, app } = await build(t, { TRUST_PROXY: '127.0.10.10', MAX_PENDING_CONNECTIONS_PER_CLIENT: '2', PENDING_HEADERS_TIMEOUT_MS: '60000' })
  const slow: Array<{ socket: Socket, closed: Promise<void> }> = []
  t.teardown(() => { for (const s of slow) s.socket.destroy() })
  for (let i = 0; i < 5; i++) slow.push(await slowHeaders(port, '127.0.10.10'))
  for (let i = 0; i < 5; i++) slow.push(await slowHeaders(port, '127.0.10.11'))
  await Promise.all(slow.slice(7).map(s => s.closed))
  await waitFor(() => app.pendingConnections.size === 7, 'the pending set to hold the proxy\'s 5 and the client\'s 2')
  t.ok(slow.slice(0, 7).every(s => !s.socket.destroyed), 'the proxy\'s five and the first two of the other address stay open')
  t.equal(app.pendingConnections.closed.refused, 3)
})
