import t from 'tap'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import { build, tempDir, waitFor } from './support/helper.js'
import { freePort, startServerOnPort } from './support/fixed-port-server.js'
import {
  SwitchboardClient, SwitchboardError, backoffCeiling, backoffDelay, shutdownDelay,
  type ClientOptions, type DirectMessage, type RoomMessage
} from '../client/index.js'

function client (t: { teardown: (fn: () => unknown) => void }, opts: ClientOptions): SwitchboardClient {
  const c = new SwitchboardClient(opts)
  t.teardown(() => c.close())
  return c
}

function nextEvent<T> (subscribe: (fn: (value: T) => void) => () => void, what: string, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`timed out waiting for ${what}`)) }, timeoutMs)
    const off = subscribe(value => { clearTimeout(timer); off(); resolve(value) })
  })
}

async function rejection (p: Promise<unknown>): Promise<SwitchboardError> {
  try {
    await p
  } catch (err) {
    return err as SwitchboardError
  }
  throw new Error('expected the promise to reject')
}

t.test('backoff delays stay within [0, min(max, initial * factor^attempt)) and grow to the cap', async t => {
  const opts = { initialDelayMs: 100, maxDelayMs: 3000, factor: 2 }
  t.same([0, 1, 2, 3, 4, 5, 10].map(a => backoffCeiling(a, opts)), [100, 200, 400, 800, 1600, 3000, 3000])
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = backoffCeiling(attempt, opts)
    t.equal(backoffDelay(attempt, opts, () => 0), 0, `attempt ${attempt}: lowest draw waits 0`)
    t.equal(backoffDelay(attempt, opts, () => 0.999999), ceiling - 1, `attempt ${attempt}: highest draw stays under the ceiling`)
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, opts)
      if (d < 0 || d >= ceiling) t.fail(`attempt ${attempt}: ${d} is outside [0, ${ceiling})`)
    }
  }
  const shutdown = [0, 0.5, 0.999999].map(r => shutdownDelay(1000, opts, () => r))
  t.same(shutdown, [1000, 1050, 1099], 'after server_shutdown: reconnectAfterMs plus up to one initial delay')
})

t.test('each reply settles the request with the same id, whatever order they come back in', async t => {
  const { url } = await build(t)
  const alice = client(t, { url, clientId: 'alice' })
  const bob = client(t, { url, clientId: 'bob' })
  await Promise.all([alice.connect(), bob.connect()])
  const got: DirectMessage[] = []
  bob.on('message', m => got.push(m))

  const texts = Array.from({ length: 20 }, (_, i) => `m${i}`)
  const sends = texts.map(text => alice.send('bob', text))
  const bad = rejection(alice.send('not a valid id!', 'x'))
  const pings = [alice.ping(), alice.ping()]
  const acks = await Promise.all(sends)
  const err = await bad
  t.equal(err.code, 'invalid_message', 'an error reply rejects only its own request, with the server code')
  t.ok(err instanceof SwitchboardError && err instanceof Error)
  for (const rtt of await Promise.all(pings)) t.type(rtt, 'number')

  await waitFor(() => got.length === 20, '20 messages at bob')
  for (let i = 0; i < 20; i++) {
    const received = got.find(m => m.text === texts[i])
    t.equal(received?.messageId, acks[i].messageId, `ack ${i} carries the messageId of the message with text m${i}`)
    t.equal(acks[i].delivered, 1)
  }
})

t.test('direct messages: delivered live, queued for an offline client, delivered on its connect', async t => {
  const { url } = await build(t)
  const alice = client(t, { url, clientId: 'alice' })
  await alice.connect()
  const offline = await alice.send('carol', 'while you were away')
  t.same([offline.delivered, offline.queued], [0, true])

  const carol = client(t, { url, clientId: 'carol' })
  const first = nextEvent<DirectMessage>(fn => carol.on('message', fn), 'queued message')
  await carol.connect()
  const m = await first
  t.same([m.from, m.to, m.text], ['alice', 'carol', 'while you were away'])

  const live = nextEvent<DirectMessage>(fn => alice.on('message', fn), 'reply')
  const ack = await carol.send('alice', 'back now')
  t.same([ack.delivered, ack.queued], [1, false])
  t.equal((await live).text, 'back now')
})

t.test('ping resolves to a round-trip time in milliseconds', async t => {
  const { url } = await build(t)
  const c = client(t, { url, clientId: 'pinger' })
  await c.connect()
  const rtt = await c.ping()
  t.ok(rtt >= 0 && rtt < 1000, `rtt ${rtt} ms is a plausible local round trip`)
})

t.test('a first connection that fails rejects connect() with connect_failed', async t => {
  const port = await freePort()
  const c = client(t, { url: `http://127.0.0.1:${port}`, clientId: 'nobody' })
  const err = await rejection(c.connect())
  t.equal(err.code, 'connect_failed')
  t.match(err.message, String(port))
})

t.test('close() while the first of several transports is still opening resolves, and connect() rejects with client_closed', async t => {
  // a server that takes the TCP connection and never answers the upgrade: the WebSocket attempt stays open
  const silent = createServer(socket => { sockets.push(socket) })
  const sockets: Socket[] = []
  const accepted = once(silent, 'connection')
  await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => {
    for (const s of sockets) s.destroy()
    silent.close(() => resolve())
  }))
  const { port } = silent.address() as { port: number }
  // the fallbacks come after the WebSocket (sse is skipped without a global EventSource)
  const c = new SwitchboardClient({ url: `http://127.0.0.1:${port}`, clientId: 'quitter', transports: ['websocket', 'stream'] })
  const connecting = rejection(c.connect())
  await accepted
  let closed = false
  const closing = c.close().then(() => { closed = true })
  t.equal((await connecting).code, 'client_closed', 'connect() rejects with client_closed')
  await new Promise(resolve => setImmediate(resolve))
  t.ok(closed, 'close() resolved by the time connect() rejected')
  if (closed) await closing
})

t.test('a request the server does not answer rejects with request_timeout after requestTimeoutMs', async t => {
  const port = await freePort()
  const server = await startServerOnPort(t, port, { DATA_DIR: tempDir(t) })
  const c = client(t, { url: server.url, clientId: 'patient', requestTimeoutMs: 300, reconnect: false })
  await c.connect()
  server.child.kill('SIGSTOP') // a server that hangs: the socket stays open, nothing answers
  t.teardown(() => { server.child.kill('SIGCONT') })
  const started = Date.now()
  const err = await rejection(c.send('someone', 'hello?'))
  const waited = Date.now() - started
  t.equal(err.code, 'request_timeout')
  t.match(err.message, /send.*300 ms/)
  t.ok(waited >= 290, `rejected after ${waited} ms, not before the timeout`)
  server.child.kill('SIGCONT')
  t.type(await c.ping(), 'number', 'the connection still works once the server answers again')
})

t.test('requests made while disconnected wait (bounded) and go out after the reconnect', async t => {
  const port = await freePort()
  const dataDir = tempDir(t)
  let server = await startServerOnPort(t, port, { DATA_DIR: dataDir })
  const reconnect = { initialDelayMs: 50, maxDelayMs: 200 }
  const alice = client(t, { url: server.url, clientId: 'alice', maxQueuedRequests: 3, reconnect })
  await alice.connect()
  const delays: Array<{ attempt: number, delayMs: number }> = []
  alice.on('reconnecting', e => delays.push(e))

  const closed = nextEvent<{ willReconnect: boolean }>(fn => alice.on('close', fn), 'close')
  await server.stop('SIGKILL') // no goodbye: the client only sees the socket drop
  t.equal((await closed).willReconnect, true)
  t.equal(alice.connected, false)

  const queued = [alice.send('bob', 'q1'), alice.send('bob', 'q2'), alice.send('bob', 'q3')]
  t.equal(alice.queued, 3)
  const overflow = await rejection(alice.send('bob', 'q4'))
  t.equal(overflow.code, 'queue_full', 'the request over the bound is rejected at once')
  t.match(overflow.message, /maxQueuedRequests/)

  await waitFor(() => delays.length >= 3, 'three failed reconnect attempts', 5000)
  for (const d of delays) {
    t.ok(d.delayMs >= 0 && d.delayMs < backoffCeiling(d.attempt - 1, { ...reconnect, factor: 2 }), `attempt ${d.attempt} waits ${d.delayMs} ms, within its bound`)
  }

  server = await startServerOnPort(t, port, { DATA_DIR: dataDir })
  const bob = client(t, { url: server.url, clientId: 'bob' })
  const got: string[] = []
  bob.on('message', m => got.push(m.text))
  await bob.connect()
  const acks = await Promise.all(queued)
  // alice's reconnect races bob's connect: each request was sent on the new
  // connection and acked, delivered live to bob or queued for him if it got
  // there first; either way bob gets all three, in order
  for (const [i, a] of acks.entries()) {
    t.ok(typeof a.messageId === 'string' && (a.delivered === 1 || (a.delivered === 0 && a.queued === true)),
      `q${i + 1} was acked on the new connection (delivered ${a.delivered}, queued ${String(a.queued)})`)
  }
  await waitFor(() => got.length === 3, 'bob gets the three queued messages')
  t.same(got, ['q1', 'q2', 'q3'], 'in the order they were made')
  t.equal(alice.queued, 0)
})

t.test('server_shutdown: the client waits reconnectAfterMs (plus jitter), holds new requests, and comes back', async t => {
  const port = await freePort()
  const dataDir = tempDir(t)
  let server = await startServerOnPort(t, port, { DATA_DIR: dataDir })
  const reconnect = { initialDelayMs: 100, maxDelayMs: 400 }
  const alice = client(t, { url: server.url, clientId: 'alice', reconnect })
  await alice.connect()

  const notice = nextEvent<{ reconnectAfterMs: number, reason: string }>(fn => alice.on('server_shutdown', fn), 'server_shutdown')
  const reconnecting = nextEvent<{ attempt: number, delayMs: number }>(fn => alice.on('reconnecting', fn), 'reconnecting')
  const exit = server.stop('SIGTERM')
  const shutdown = await notice
  t.type(shutdown.reconnectAfterMs, 'number')
  const first = await reconnecting
  t.ok(first.delayMs >= shutdown.reconnectAfterMs && first.delayMs < shutdown.reconnectAfterMs + reconnect.initialDelayMs,
    `first retry waits ${first.delayMs} ms: at least reconnectAfterMs (${shutdown.reconnectAfterMs}) plus under ${reconnect.initialDelayMs} jitter`)
  t.equal(await exit, 0, 'the server exited cleanly')

  const pending = alice.send('bob', 'sent while the server was away')
  // listen first: the client may be back before the test hears the server is listening
  const reopened = nextEvent<{ clientId: string }>(fn => alice.on('open', fn), 'open after restart', 30000)
  server = await startServerOnPort(t, port, { DATA_DIR: dataDir })
  t.equal((await reopened).clientId, 'alice')
  const ack = await pending
  t.type(ack.messageId, 'string', 'the request made while away was sent after the reconnect')
})

t.test('close() stops reconnecting and rejects what is still waiting with client_closed', async t => {
  const port = await freePort()
  const server = await startServerOnPort(t, port, { DATA_DIR: tempDir(t) })
  const c = new SwitchboardClient({ url: server.url, clientId: 'leaver', reconnect: { initialDelayMs: 50, maxDelayMs: 100 } })
  await c.connect()
  const reconnecting = nextEvent(fn => c.on('reconnecting', fn), 'reconnecting')
  await server.stop('SIGKILL')
  await reconnecting
  const waiting = c.send('x', 'never sent')
  await c.close()
  t.equal((await rejection(waiting)).code, 'client_closed')
  let attempts = 0
  c.on('reconnecting', () => attempts++)
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(attempts, 0, 'no reconnect after close()')
})

t.test('rooms: join, publish, state, presence and leave through the client', async t => {
  const { url } = await build(t)
  const alice = client(t, { url, clientId: 'alice' })
  const bob = client(t, { url, clientId: 'bob' })
  await Promise.all([alice.connect(), bob.connect()])
  const aRoom = await alice.join('lobby')
  const presence = nextEvent<{ clientId: string, event: string, members: string[] }>(fn => aRoom.on('presence', fn), 'presence')
  const bRoom = await bob.join('lobby')
  const p = await presence
  t.same([p.event, p.clientId], ['join', 'bob'])
  t.same([...p.members].sort(), ['alice', 'bob'])

  const seenByBob = nextEvent<RoomMessage>(fn => bRoom.on('message', fn), 'room message')
  const ack = await aRoom.publish({ text: 'hello room' })
  const m = await seenByBob
  t.same([m.offset, m.messageId, m.from, m.data], [ack.offset, ack.messageId, 'alice', { text: 'hello room' }])

  const stateAtBob = nextEvent<{ version: number, state: Record<string, unknown> }>(fn => bRoom.on('state', fn), 'state')
  const updated = await aRoom.update({ topic: 'demo', n: 1 })
  const s = await stateAtBob
  t.equal(s.version, updated.version)
  t.same(s.state, { topic: 'demo', n: 1 })
  t.same(aRoom.state, { topic: 'demo', n: 1 })
  const conflict = await rejection(bRoom.update({ n: 2 }, { baseVersion: updated.version - 1 }))
  t.equal(conflict.code, 'version_conflict')

  const left = nextEvent<{ clientId: string, event: string }>(fn => aRoom.on('presence', fn), 'leave presence')
  await bRoom.leave()
  const l = await left
  t.same([l.event, l.clientId], ['leave', 'bob'], 'the others see the leave')
  t.equal((await rejection(bRoom.publish('after leaving'))).code, 'not_in_room')
})

t.test('rooms: join with since delivers the missed messages once, then live ones, in order', async t => {
  const { url } = await build(t)
  const pub = client(t, { url, clientId: 'pub' })
  await pub.connect()
  const room = await pub.join('history')
  for (let i = 1; i <= 5; i++) await room.publish(i)
  const sub = client(t, { url, clientId: 'sub' })
  await sub.connect()
  const seen: unknown[] = []
  const recovered = nextEvent<{ missed: number }>(fn => sub.on('recovered', fn), 'recovered')
  const subRoom = await sub.join('history', { since: 2 })
  subRoom.on('message', m => seen.push(m.data))
  t.equal((await recovered).missed, 3)
  for (let i = 6; i <= 8; i++) await room.publish(i)
  await waitFor(() => seen.length >= 3, 'live messages')
  t.same(seen, [6, 7, 8], 'the missed ones came before join() resolved; live ones follow, each once')
  t.equal(subRoom.offset, room.offset)
})

t.test('rooms: when history no longer reaches back, the lost offsets are reported once as a gap', async t => {
  const { url } = await build(t, { ROOM_HISTORY_SIZE: '3' })
  const pub = client(t, { url, clientId: 'pub' })
  await pub.connect()
  const room = await pub.join('short-memory')
  for (let i = 1; i <= 10; i++) await room.publish(i)

  const sub = client(t, { url, clientId: 'late' })
  await sub.connect()
  const gaps: Array<{ from: number, to: number }> = []
  let recovered = 0
  sub.on('gap', g => gaps.push({ from: g.from, to: g.to }))
  sub.on('recovered', () => recovered++)
  const subRoom = await sub.join<number>('short-memory', { since: 1 })
  t.same(gaps, [{ from: 2, to: 7 }], 'offsets 2-7 are gone; 8-10 were still in history')
  t.equal(recovered, 0, 'an incomplete recovery is not reported as recovered')
  t.equal(subRoom.offset, 10)

  const other = client(t, { url, clientId: 'from-the-future' })
  await other.connect()
  const resets: Array<{ previousOffset: number, offset: number }> = []
  other.on('reset', e => resets.push({ previousOffset: e.previousOffset, offset: e.offset }))
  const future = await other.join<number>('short-memory', { since: 500 })
  t.same(resets, [{ previousOffset: 500, offset: 10 }], 'a since beyond the room offset resets the count instead of dropping new messages')
  const next = nextEvent<RoomMessage>(fn => future.on('message', fn), 'the next message')
  await room.publish(11)
  t.equal((await next).data, 11)
})
