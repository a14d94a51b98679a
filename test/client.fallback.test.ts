import t from 'tap'
import http from 'node:http'
import { createSigner } from 'fast-jwt'
import { WebSocket as WsClient } from 'ws'
import { tempDir, waitFor, type TestContext } from './support/helper.js'
import { freePort, startServerOnPort } from './support/fixed-port-server.js'
import { SwitchboardClient, type GapEvent, type TransportName, type WebSocketConstructor } from '../client/index.js'
import type { DirectMessage } from '../protocol/frames.js'

/** A proxy that forwards plain HTTP (streamed both ways) and refuses every WebSocket upgrade with 403, as some corporate proxies do. */
async function noUpgradeProxy (t: TestContext, target: number): Promise<{ url: string, upgradesRefused: () => number }> {
  let refused = 0
  const proxy = http.createServer((req, res) => {
    const upstream = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers, agent: false }, up => {
      res.writeHead(up.statusCode ?? 502, up.headers)
      up.pipe(res)
      up.on('error', () => res.destroy())
    })
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' }).end('{"code":"unavailable","message":"upstream down"}')
      else res.destroy()
    })
    res.on('close', () => upstream.destroy())
    req.pipe(upstream)
  })
  proxy.on('upgrade', (_req, socket) => {
    refused++
    socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
  })
  await new Promise<void>(resolve => proxy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => {
    proxy.closeAllConnections()
    proxy.close(() => resolve())
  }))
  const address = proxy.address() as { port: number }
  return { url: `http://127.0.0.1:${address.port}`, upgradesRefused: () => refused }
}

const reconnect = { initialDelayMs: 50, maxDelayMs: 500 }

/**
 * A WebSocket for the client that the test can refuse, while its HTTP stays
 * reachable: while `refuse` is above zero each connection (a probe too) goes
 * either to a port where nothing listens (`how: 'refused'`, as while the
 * server restarts) or to a server that answers every upgrade 403 (`how:
 * 'forbidden'`, as a proxy that refuses WebSockets).
 */
async function gatedWebSocket (t: TestContext) {
  const forbidding = http.createServer((_req, res) => res.writeHead(404).end())
  forbidding.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'))
  await new Promise<void>(resolve => forbidding.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => {
    forbidding.closeAllConnections()
    forbidding.close(() => resolve())
  }))
  const closedPort = await freePort()
  const forbiddingPort = (forbidding.address() as { port: number }).port
  /** `refused`: connection attempts refused (probes are counted apart, in `probes`). */
  const gate = { refuse: 0, how: 'refused' as 'refused' | 'forbidden', refused: 0, probes: 0, sockets: [] as WsClient[] }
  class Gated extends WsClient {
    constructor (address: string) {
      const url = new URL(address)
      const probe = url.searchParams.get('probe') === '1'
      const refused = gate.refuse > 0
      if (refused) {
        gate.refuse--
        if (!probe) gate.refused++
        url.port = String(gate.how === 'refused' ? closedPort : forbiddingPort)
      }
      if (probe) gate.probes++
      super(url.toString())
      if (!refused) gate.sockets.push(this)
    }
  }
  return { gate, WebSocket: Gated as unknown as WebSocketConstructor }
}

t.test('behind a proxy that refuses WebSocket upgrades the client falls back to the HTTP stream, with the same API and exactly-once delivery across a restart', async t => {
  const port = await freePort()
  const env = { DATA_DIR: tempDir(t), RATE_LIMIT_MAX: '100000', WS_MESSAGES_PER_SECOND: '1000', ROOM_HISTORY_SIZE: '1000' }
  let server = await startServerOnPort(t, port, env)
  const proxy = await noUpgradeProxy(t, port)

  const carol = new SwitchboardClient({ url: proxy.url, clientId: 'carol', reconnect })
  const bob = new SwitchboardClient({ url: server.url, clientId: 'bob', reconnect })
  t.teardown(() => Promise.all([carol.close(), bob.close()]))
  const changes: Array<{ transport: TransportName, previous: TransportName | null }> = []
  carol.on('transport', e => changes.push(e))
  const welcome = await carol.connect()
  t.equal(welcome.clientId, 'carol')
  t.equal(carol.transport, 'stream', 'the client says it is on the HTTP stream')
  t.same(changes, [{ transport: 'stream', previous: null }], 'and tells it with a transport event')
  t.ok(proxy.upgradesRefused() >= 1, 'the WebSocket was tried first and refused')
  await bob.connect()
  t.equal(bob.transport, 'websocket', 'a client with nothing in the way stays on the WebSocket')

  // join, then a WebSocket client's messages arrive
  const room = await carol.join<unknown>('lobby')
  const got: unknown[] = []
  room.on('message', m => got.push(m.data))
  const bobRoom = await bob.join<unknown>('lobby')
  const bobGot: unknown[] = []
  bobRoom.on('message', m => bobGot.push(m.data))
  await bobRoom.publish('hello carol')
  await waitFor(() => got.includes('hello carol'), 'the WebSocket client\'s message on the stream')

  // publish over HTTP
  const ack = await room.publish('hello bob')
  t.match(ack, { room: 'lobby', offset: 2, messageId: String })
  await waitFor(() => bobGot.includes('hello bob'), 'the stream client\'s publish at the WebSocket client')

  // a retried publish (same idempotency key) is applied once
  const first = await carol.request<{ offset: number, duplicate?: true }>({ type: 'publish', room: 'lobby', data: 'once', idempotencyKey: 'retry-1' })
  const again = await carol.request<{ offset: number, duplicate?: true }>({ type: 'publish', room: 'lobby', data: 'once', idempotencyKey: 'retry-1' })
  t.equal(again.offset, first.offset, 'the retry gets the first publish\'s offset')
  t.equal(again.duplicate, true, 'and says it was a duplicate')
  await bobRoom.publish('after the retry')
  await waitFor(() => got.includes('after the retry'), 'the marker after the retry')
  t.equal(got.filter(d => d === 'once').length, 1, 'the retried publish reached the room once')

  // direct messages both ways
  const bobInbox: DirectMessage[] = []
  bob.on('message', m => bobInbox.push(m))
  const carolInbox: DirectMessage[] = []
  carol.on('message', m => carolInbox.push(m))
  await carol.send('bob', 'hi bob')
  await waitFor(() => bobInbox.some(m => m.text === 'hi bob' && m.from === 'carol'), 'carol\'s direct message at bob')
  await bob.send('carol', 'hi carol')
  await waitFor(() => carolInbox.some(m => m.text === 'hi carol' && m.from === 'bob'), 'bob\'s direct message at carol')

  // every message exactly once while the server restarts
  const TOTAL = 60
  const numbers: number[] = []
  const gaps: GapEvent[] = []
  carol.on('gap', g => gaps.push(g))
  room.on('message', m => { if (typeof m.data === 'number') numbers.push(m.data) })
  let reopened = 0
  carol.on('open', () => reopened++)
  let acked = 0
  const publishing = (async () => {
    for (let n = 1; n <= TOTAL; n++) {
      await bobRoom.publish(n)
      acked = n
    }
  })()
  publishing.catch(() => {})
  await Promise.race([waitFor(() => acked >= 20, '20 acknowledged publishes'), publishing])
  t.equal(await server.stop('SIGTERM'), 0, 'graceful stop')
  server = await startServerOnPort(t, port, env)
  await publishing
  await waitFor(() => reopened >= 1, 'carol back after the restart')
  t.equal(carol.transport, 'stream', 'still on the stream after the restart')
  await bobRoom.publish('end')
  await waitFor(() => got.includes('end'), 'the last message at carol')
  t.same(numbers, Array.from({ length: TOTAL }, (_, i) => i + 1), 'each of the 60 messages once, in order')
  t.same(gaps, [], 'no gap')
})

t.test('transports: [\'stream\'] uses the HTTP stream without a proxy: join, state, leave', async t => {
  const port = await freePort()
  const server = await startServerOnPort(t, port, { DATA_DIR: tempDir(t), RATE_LIMIT_MAX: '100000' })
  const dave = new SwitchboardClient({ url: server.url, clientId: 'dave', transports: ['stream'], reconnect })
  const erin = new SwitchboardClient({ url: server.url, clientId: 'erin', reconnect })
  t.teardown(() => Promise.all([dave.close(), erin.close()]))
  await dave.connect()
  await erin.connect()
  t.equal(dave.transport, 'stream')
  t.equal(dave.connected, true)

  const a = await dave.join<string>('a')
  const b = await dave.join<string>('b')
  const erinA = await erin.join<string>('a')
  const erinB = await erin.join<string>('b')
  const got: string[] = []
  a.on('message', m => got.push(`a:${m.data}`))
  b.on('message', m => got.push(`b:${m.data}`))
  await erinA.publish('1')
  await erinB.publish('2')
  await waitFor(() => got.length === 2, 'a message in each room')
  t.same(got.sort(), ['a:1', 'b:2'])

  const ack = await a.update({ title: 'x' })
  t.match(ack, { room: 'a', version: 1 })
  await waitFor(() => erinA.state.title === 'x', 'the state change at the WebSocket client')
  await erinA.update({ count: 2 })
  await waitFor(() => a.state.count === 2, 'a state change on the stream')
  t.same(a.state, { title: 'x', count: 2 })

  await b.leave()
  await erinB.publish('not for dave')
  await erinA.publish('3')
  await waitFor(() => got.includes('a:3'), 'room a goes on after leaving b')
  t.notOk(got.includes('b:not for dave'), 'a left room delivers nothing')
  t.same(got.filter(g => g === 'a:1'), ['a:1'], 'reopening the stream for a leave delivers nothing twice')

  await t.rejects(dave.request({ type: 'exec', room: 'a', code: '1' }), { code: 'unsupported' }, 'exec needs a WebSocket')
})

t.test('with a global EventSource (as in a browser) the fallback is SSE, and a join of a second room resumes the first', async t => {
  const { EventSource } = await import('eventsource')
  const g = globalThis as { EventSource?: unknown }
  const before = g.EventSource
  g.EventSource = EventSource
  t.teardown(() => { g.EventSource = before })
  const port = await freePort()
  await startServerOnPort(t, port, { DATA_DIR: tempDir(t), RATE_LIMIT_MAX: '100000' })
  const proxy = await noUpgradeProxy(t, port)
  const frank = new SwitchboardClient({ url: proxy.url, clientId: 'frank', reconnect })
  const grace = new SwitchboardClient({ url: `http://127.0.0.1:${port}`, clientId: 'grace', reconnect })
  t.teardown(() => Promise.all([frank.close(), grace.close()]))
  await frank.connect()
  await grace.connect()
  t.equal(frank.transport, 'sse', 'SSE comes before the NDJSON stream when EventSource exists')

  const one = await frank.join<string>('one')
  const got: string[] = []
  one.on('message', m => got.push(m.data))
  const graceOne = await grace.join<string>('one')
  await graceOne.publish('first')
  await waitFor(() => got.includes('first'), 'a message over SSE')
  await graceOne.update({ mood: 'sunny' })
  await waitFor(() => one.state.mood === 'sunny', 'a state change over SSE')
  await frank.join('two')
  await graceOne.publish('second')
  await waitFor(() => got.includes('second'), 'room one goes on after the stream reopened for room two')
  t.same(got, ['first', 'second'], 'nothing lost or repeated by the reopen')
  t.same(one.state, { mood: 'sunny' })
  const ack = await one.publish('from frank')
  t.match(ack, { room: 'one', offset: 3 })
})

t.test('with a token, the stream and the HTTP writes carry it: writes are made as its sub', async t => {
  const secret = 'fallback-test-secret-0123456789abcdef'
  const sign = (claims: Record<string, unknown>) => createSigner({ key: secret, algorithm: 'HS256' })(claims)
  const port = await freePort()
  await startServerOnPort(t, port, { DATA_DIR: tempDir(t), RATE_LIMIT_MAX: '100000', AUTH_SECRET: secret })
  const heidi = new SwitchboardClient({ url: `http://127.0.0.1:${port}`, token: sign({ sub: 'heidi', rooms: ['ops'] }), transports: ['stream'], reconnect })
  const ivan = new SwitchboardClient({ url: `http://127.0.0.1:${port}`, token: sign({ sub: 'ivan' }), reconnect })
  t.teardown(() => Promise.all([heidi.close(), ivan.close()]))
  t.equal((await heidi.connect()).clientId, 'heidi')
  await ivan.connect()
  const ops = await heidi.join<string>('ops')
  const ivanOps = await ivan.join<string>('ops')
  const seen: Array<{ from: string, data: string }> = []
  ivanOps.on('message', m => seen.push({ from: m.from, data: m.data }))
  await ops.publish('deployed')
  await waitFor(() => seen.length === 1, 'heidi\'s publish at ivan')
  t.same(seen, [{ from: 'heidi', data: 'deployed' }], 'published as the token\'s sub')
  const inbox: DirectMessage[] = []
  ivan.on('message', m => inbox.push(m))
  await heidi.send('ivan', 'ping')
  await waitFor(() => inbox.length === 1, 'heidi\'s direct message')
  t.equal(inbox[0].from, 'heidi')
  await t.rejects(heidi.join('secret'), { code: 'forbidden' }, 'a room outside the token\'s claim is refused')
  const got: string[] = []
  ops.on('message', m => got.push(m.data))
  await ivanOps.publish('still here')
  await waitFor(() => got.includes('still here'), 'the stream goes on after the refused join')
})

t.test('a reconnect does not fall back past the transport that carried the connection, and a client on a fallback moves back to the WebSocket once a probe finds it', async t => {
  const port = await freePort()
  const server = await startServerOnPort(t, port, { DATA_DIR: tempDir(t), RATE_LIMIT_MAX: '100000', WS_MESSAGES_PER_SECOND: '1000' })
  const { gate, WebSocket } = await gatedWebSocket(t)
  const alice = new SwitchboardClient({ url: server.url, clientId: 'alice', WebSocket, reconnect, upgrade: { initialDelayMs: 100, maxDelayMs: 400 } })
  const bob = new SwitchboardClient({ url: server.url, clientId: 'bob', reconnect })
  t.teardown(() => Promise.all([alice.close(), bob.close()]))
  const changes: Array<{ transport: TransportName, previous: TransportName | null }> = []
  alice.on('transport', e => changes.push(e))
  let opened = 0
  alice.on('open', () => opened++)
  await Promise.all([alice.connect(), bob.connect()])
  t.equal(alice.transport, 'websocket')
  const dropAlice = () => gate.sockets[gate.sockets.length - 1].terminate()

  // the connection drops and nothing answers at the server's address for eight attempts, as while it
  // restarts: the stream would open, but the client backs off and tries the WebSocket again
  gate.how = 'refused'
  gate.refuse = 8
  dropAlice()
  await waitFor(() => opened === 2, 'alice back')
  t.equal(gate.refused, 8, 'eight attempts found nothing at the address')
  t.equal(alice.transport, 'websocket', 'and the client came back on the WebSocket')

  // an answer that refuses the upgrade (a 403) twice: the first five attempts stay on the WebSocket all the same
  gate.how = 'forbidden'
  gate.refused = 0
  gate.refuse = 2
  dropAlice()
  await waitFor(() => opened === 3, 'alice back again')
  t.equal(gate.refused, 2, 'two upgrades were refused')
  t.equal(alice.transport, 'websocket', 'and the client came back on the WebSocket')
  t.same(changes, [{ transport: 'websocket', previous: null }], 'never on the stream meanwhile')

  // refused for good (a proxy that now refuses upgrades): after five attempts the whole order is tried
  gate.refused = 0
  gate.refuse = Infinity
  dropAlice()
  await waitFor(() => alice.transport === 'stream', 'alice on the stream')
  t.equal(gate.refused, 6, 'five reconnects stayed on the WebSocket, the sixth fell back to the stream')
  t.same(changes.slice(1), [{ transport: 'stream', previous: 'websocket' }])

  // on the stream, probes find no WebSocket; writes go over HTTP
  const aliceRoom = await alice.join<number>('moves')
  const bobRoom = await bob.join<number>('moves')
  const seen: number[] = []
  bobRoom.on('message', m => seen.push(m.data))
  const probed = gate.probes
  await waitFor(() => gate.probes >= probed + 2, 'two more refused probes')
  t.equal(alice.transport, 'stream', 'a refused probe changes nothing')

  // the WebSocket works again while alice keeps publishing: she moves over, and every publish is applied once
  const offsets: number[] = []
  const move = { after: -1 }
  alice.on('transport', () => { move.after = offsets.length })
  // publishing goes on until five publishes after the move (at most 5,000: a move that never comes fails below)
  for (let n = 1; n <= 5000 && (move.after < 0 || n <= move.after + 5); n++) {
    offsets.push((await aliceRoom.publish(n)).offset)
    if (n === 10) gate.refuse = 0
  }
  t.equal(alice.transport, 'websocket', 'alice is back on the WebSocket')
  t.same(changes.slice(2), [{ transport: 'websocket', previous: 'stream' }], 'the move is told as a transport event')
  t.ok(move.after >= 10, `the move came after the WebSocket worked again (after ${move.after} publishes)`)
  const total = offsets.length
  await aliceRoom.publish(total + 1)
  await waitFor(() => seen.includes(total + 1), 'the last publish at bob')
  t.same(seen, Array.from({ length: total + 1 }, (_, i) => i + 1), `each of ${total + 1} publishes once, in order, across the move`)
  t.same(offsets, Array.from({ length: total }, (_, i) => offsets[0] + i), 'one offset each')
  t.same(aliceRoom.state, bobRoom.state)
})

t.test('a probe upgrade to /ws?probe=1 is closed at once with 1000 "probe": no session, no welcome, the inbox kept', async t => {
  const port = await freePort()
  const server = await startServerOnPort(t, port, { DATA_DIR: tempDir(t) })
  const bob = new SwitchboardClient({ url: server.url, clientId: 'bob', reconnect })
  t.teardown(() => bob.close())
  await bob.connect()
  const ack = await bob.send('zoe', 'waiting for you')
  t.equal(ack.queued, true, 'zoe is offline: the message waits in her inbox')

  const probe = new WsClient(`ws://127.0.0.1:${port}/ws?clientId=zoe&probe=1`)
  const frames: string[] = []
  probe.on('message', data => frames.push(String(data)))
  const closed = await new Promise<{ code: number, reason: string }>(resolve => probe.on('close', (code, reason) => resolve({ code, reason: String(reason) })))
  t.same(closed, { code: 1000, reason: 'probe' })
  t.same(frames, [], 'no welcome, no inbox')

  const zoe = new SwitchboardClient({ url: server.url, clientId: 'zoe', reconnect })
  t.teardown(() => zoe.close())
  const inbox: DirectMessage[] = []
  zoe.on('message', m => inbox.push(m))
  await zoe.connect()
  await waitFor(() => inbox.length === 1, 'the queued message at zoe')
  t.equal(inbox[0].text, 'waiting for you')

  const invalid = new WsClient(`ws://127.0.0.1:${port}/ws?probe=yes`)
  const status = await new Promise<number | undefined>(resolve => invalid.on('unexpected-response', (_req, res) => resolve(res.statusCode)))
  t.equal(status, 400, 'a probe value other than 1 is refused')
})
