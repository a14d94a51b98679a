import t from 'tap'
import net from 'node:net'
import { build, waitFor } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'

const delay = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

t.test('a message of WS_MAX_PAYLOAD+1 bytes closes the connection with 1009; one of WS_MAX_PAYLOAD does not', async t => {
  const { wsUrl } = await build(t, { WS_MAX_PAYLOAD: '4096' })
  const ok = await TestClient.connect(wsUrl)
  t.teardown(() => ok.close())
  ok.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(4096 - 27) }).padEnd(4096, ' '))
  t.equal((await ok.next('pong')).type, 'pong', 'exactly the limit is read and answered')
  t.ok(ok.open)
  const big = await TestClient.connect(wsUrl)
  big.send('x'.repeat(4097))
  t.equal((await big.closed).code, 1009)
  t.equal((await ok.request({ type: 'ping' })).type, 'pong', 'other connections are unaffected')
})

t.test('a flood at 10x the rate gets rate_limited, then 1008, while a well-behaved client stays fast', async t => {
  const rate = 20
  const { wsUrl } = await build(t, { WS_MESSAGES_PER_SECOND: String(rate) })
  const flooder = await TestClient.connect(wsUrl, { clientId: 'flooder' })
  const calm = await TestClient.connect(wsUrl, { clientId: 'calm' })
  t.teardown(() => calm.close())
  const started = Date.now()
  const flood = setInterval(() => { if (flooder.open) for (let i = 0; i < 10; i++) flooder.send({ type: 'ping' }) }, 1000 / rate)
  const rtts: number[] = []
  const state: { closed?: { code: number, reason: string } } = {}
  flooder.closed.then(c => { state.closed = c }, () => {})
  while (!state.closed && Date.now() - started < 8000) {
    const t0 = performance.now()
    await calm.request({ type: 'ping' })
    rtts.push(performance.now() - t0)
    await delay(100)
  }
  clearInterval(flood)
  t.ok(state.closed, 'the flooder was closed')
  t.equal(state.closed?.code, 1008)
  const floodMs = Date.now() - started
  t.ok(floodMs >= 2500 && floodMs <= 5000, `closed after sustained flooding (${floodMs} ms)`)
  const limited = flooder.all('error').filter(e => e.code === 'rate_limited')
  t.ok(limited.length > 100, `excess messages got rate_limited (${limited.length})`)
  t.ok(flooder.all('pong').length >= rate * 2, 'messages within the rate were still served')
  rtts.sort((a, b) => a - b)
  t.comment(`well-behaved ping RTT ms: median ${rtts[rtts.length >> 1].toFixed(1)}, max ${rtts[rtts.length - 1].toFixed(1)} over ${rtts.length}`)
  t.ok(rtts[rtts.length - 1] < 250, 'the other client was never stalled')
  t.ok(calm.open && calm.all('error').length === 0, 'the well-behaved client was never limited')
})

t.test('an HTTP body over the body limit gets 413 and the server goes on', async t => {
  const { url } = await build(t)
  const body = JSON.stringify({ from: 'a', to: 'b', text: 'x'.repeat(2 * 1048576) })
  const res = await fetch(`${url}/api/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  t.equal(res.status, 413)
  t.match(await res.json(), { statusCode: 413, error: 'Payload Too Large' })
  t.equal((await fetch(`${url}/health`)).status, 200)
})

t.test('a client that sends headers too slowly is cut off; a WebSocket outlives the request timeout', async t => {
  const { port, wsUrl } = await build(t, { HTTP_HEADERS_TIMEOUT_MS: '500', HTTP_REQUEST_TIMEOUT_MS: '1000' })
  const ws = await TestClient.connect(wsUrl)
  t.teardown(() => ws.close())
  const socket = net.connect(port, '127.0.0.1')
  await new Promise(resolve => socket.once('connect', resolve))
  let answer = ''
  socket.on('data', d => { answer += d.toString() })
  const ended = new Promise<number>(resolve => socket.once('close', () => resolve(Date.now())))
  const started = Date.now()
  socket.write('GET /health HTTP/1.1\r\nHost: x\r\n')
  const trickle = setInterval(() => { if (!socket.destroyed) socket.write(`X-Slow-${Date.now()}: 1\r\n`) }, 100)
  const endedAt = await Promise.race([ended, delay(5000).then(() => 0)])
  clearInterval(trickle)
  socket.destroy()
  t.ok(endedAt > 0, `the slow-header socket was closed by the server after ${endedAt - started} ms`)
  t.match(answer, /^HTTP\/1\.1 408/, 'with 408 Request Timeout')
  await delay(Math.max(0, 1500 - (Date.now() - started)))
  t.ok(ws.open, 'an upgraded connection is not subject to the HTTP request timeout')
  t.equal((await ws.request({ type: 'ping' })).type, 'pong')
})

t.test('with TRUST_PROXY off a spoofed X-Forwarded-For does not dodge per-client limits', async t => {
  const { wsUrl, url } = await build(t, { MAX_CONNECTIONS_PER_CLIENT: '2', RATE_LIMIT_MAX: '2' })
  const a = await TestClient.connect(wsUrl, { headers: { 'x-forwarded-for': '10.0.0.1' } })
  const b = await TestClient.connect(wsUrl, { headers: { 'x-forwarded-for': '10.0.0.2' } })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  const third = await tryUpgrade(wsUrl, { headers: { 'x-forwarded-for': '10.0.0.3' } })
  t.equal(third.status, 429, 'the third connection from one address is refused whatever the header says')
  t.match(third.body, { error: 'connection_limit_exceeded', scope: 'client', limit: 2 })
  const statuses = []
  for (let i = 1; i <= 3; i++) statuses.push((await fetch(`${url}/api/status`, { headers: { 'x-forwarded-for': `10.0.1.${i}` } })).status)
  t.same(statuses, [200, 200, 429], 'the HTTP rate limit counts the real address')
})

for (const trust of ['1', '127.0.0.1', 'loopback']) {
  t.test(`behind a trusted proxy (TRUST_PROXY=${trust}) the client is the address the proxy appended, not one the client forged`, async t => {
    const { wsUrl } = await build(t, { MAX_CONNECTIONS_PER_CLIENT: '2', TRUST_PROXY: trust })
    const a = await TestClient.connect(wsUrl, { headers: { 'x-forwarded-for': '6.6.6.1, 203.0.113.7' } })
    const b = await TestClient.connect(wsUrl, { headers: { 'x-forwarded-for': '6.6.6.2, 203.0.113.7' } })
    t.teardown(() => Promise.all([a.close(), b.close()]))
    t.equal((await tryUpgrade(wsUrl, { headers: { 'x-forwarded-for': '6.6.6.3, 203.0.113.7' } })).status, 429, 'forged leading entries are ignored')
    const other = await tryUpgrade(wsUrl, { headers: { 'x-forwarded-for': '203.0.113.8' } })
    t.equal(other.status, 101, `another real client behind the proxy has its own slots ${JSON.stringify(other.body)}`)
  })
}

t.test('a client that stops reading is closed with 1013 once its send buffer passes the cap, and counted', async t => {
  const built = await build(t, { WS_MAX_BUFFERED_BYTES: '262144', WS_MESSAGES_PER_SECOND: '2000', HEARTBEAT_INTERVAL_MS: '60000' })
  const { wsUrl, url, app } = built
  const stuck = await TestClient.connect(wsUrl, { clientId: 'stuck' })
  const sender = await TestClient.connect(wsUrl, { clientId: 'sender' })
  t.teardown(() => sender.close())
  const raw = (stuck.ws as unknown as { _socket: net.Socket })._socket
  raw.pause() // the peer no longer reads: the kernel buffers fill, then the server's
  const text = 'y'.repeat(30000)
  let sent = 0
  await waitFor(async () => {
    if (app.sessions.sendBuffer.closes > 0) return true
    for (let i = 0; i < 50; i++) sender.send({ type: 'send', to: 'stuck', text })
    sent += 50
    await sender.waitFor(m => m.type === 'ack' && sender.all('ack').length >= sent, 'acks', 10000)
    return app.sessions.sendBuffer.closes > 0 || sent > 4000
  }, 'a slow-consumer close', 60000)
  t.equal(app.sessions.sendBuffer.closes, 1, `closed after ${sent} messages of 30 kB`)
  const line = built.logs().find(l => l.event === 'connection.slow_consumer')
  t.ok(line, 'logged as connection.slow_consumer')
  t.ok((line?.bufferedAmount as number) > 262144 && (line?.bufferedAmount as number) < 262144 + 100000, 'the buffer was at most one frame past the cap')
  raw.resume()
  t.equal((await stuck.closed).code, 1013, 'the client, reading again, finds close code 1013')
  const status = await (await fetch(`${url}/api/status`)).json() as any
  t.equal(status.connections.slowConsumerCloses, 1, '/api/status counts it')
  t.equal(status.connections.total, 1, 'only the sender is left')
  t.equal((await sender.request({ type: 'ping' })).type, 'pong')
})
