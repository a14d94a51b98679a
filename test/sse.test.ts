import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { connect } from 'node:net'
import { createSigner } from 'fast-jwt'
import { build, requestJson, tempDir, waitFor } from './support/helper.js'
import { stubbornClient, TestClient } from './support/ws-client.js'
import { freePort, startServer } from './support/process.js'
import { parseSse, SseClient, StreamReader } from './support/stream-clients.js'

const SECRET = 'sse-test-secret-0123456789abcdef'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)
const ADMIN_TOKEN = 'admin-token-0123456789abcdef'

const publish = (url: string, room: string, data: unknown, headers: Record<string, string> = {}) =>
  fetch(`${url}/api/rooms/${room}/publish`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ data }) })
    .then(async res => ({ status: res.status, headers: res.headers, body: await res.json() as any }))

t.test('EventSource gets welcome, joined, room messages, state, presence and direct messages, each with an id of its room positions', async t => {
  const { url, wsUrl } = await build(t, { RATE_LIMIT_MAX: '100000' })
  await publish(url, 'lobby', { n: 1 })
  const es = new SseClient(`${url}/sse?clientId=alice&rooms=lobby,empty`)
  t.teardown(() => es.close())
  const welcome = await es.log.next('welcome')
  t.match(welcome.data, { type: 'welcome', clientId: 'alice', connectionId: String, heartbeatIntervalMs: Number })
  const lobby = await es.log.next('joined', e => e.data.room === 'lobby')
  t.match(lobby.data, { type: 'joined', room: 'lobby', offset: 1, missed: [], recovered: false, epoch: /^[0-9a-f]+$/ })
  const epoch = lobby.data.epoch
  t.equal(lobby.id, `lobby:${epoch}:1`, 'the id holds the room, its epoch and the offset seen')
  const empty = await es.log.next('joined', e => e.data.room === 'empty')
  t.equal(empty.id, `lobby:${epoch}:1,empty::0`, 'every listed room, in the order of ?rooms=')

  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => bob.close())
  await bob.request({ type: 'join', room: 'lobby' })
  t.match((await es.log.next('presence')).data, { type: 'presence', room: 'lobby', event: 'join', clientId: 'bob' })
  await bob.request({ type: 'publish', room: 'lobby', data: 'from ws' })
  const m = await es.log.next('room_message')
  t.match(m.data, { type: 'room_message', room: 'lobby', offset: 2, from: 'bob', data: 'from ws', epoch })
  t.equal(m.id, `lobby:${epoch}:2,empty::0`)
  await bob.request({ type: 'update', room: 'lobby', patch: { title: 'x' } })
  t.match((await es.log.next('state')).data, { type: 'state', room: 'lobby', version: 1, patch: { title: 'x' }, from: 'bob' })
  await bob.request({ type: 'send', to: 'alice', text: 'hi alice' })
  const dm = await es.log.next('message')
  t.match(dm.data, { type: 'message', from: 'bob', to: 'alice', text: 'hi alice' })
  t.equal(dm.id, `lobby:${epoch}:2,empty::0`, 'a direct message carries the positions unchanged')
  t.same(es.log.roomMessages('lobby').map(x => x.offset), [2], 'the message published before the stream opened is not replayed to a new stream')
})

t.test('GET /stream: the same events as NDJSON lines over plain http.get, resumed by ?lastEventId= with no gap and no duplicate', async t => {
  const { url } = await build(t, { RATE_LIMIT_MAX: '100000' })
  const first = new StreamReader(`${url}/stream?clientId=carol&rooms=news`)
  t.teardown(() => first.close())
  await first.response
  t.equal(first.status, 200)
  t.match(first.headers['content-type'], /^application\/x-ndjson/)
  t.equal(first.headers['transfer-encoding'], 'chunked')
  await first.log.next('joined')
  for (let i = 1; i <= 5; i++) await publish(url, 'news', i)
  const fifth = await first.log.next('room_message', e => e.data.offset === 5)
  first.close()
  await first.ended
  for (let i = 6; i <= 10; i++) await publish(url, 'news', i)

  const again = new StreamReader(`${url}/stream?clientId=carol&rooms=news&lastEventId=${encodeURIComponent(fifth.id)}`)
  t.teardown(() => again.close())
  const joined = await again.log.next('joined')
  t.equal(joined.data.recovered, true)
  t.same(joined.data.missed.map((m: any) => m.data), [6, 7, 8, 9, 10], 'what was published while away, in `missed`')
  await publish(url, 'news', 11)
  await again.log.next('room_message', e => e.data.offset === 11)
  const offsets = [...first.log.roomMessages('news'), ...again.log.roomMessages('news')].map(m => m.offset)
  t.same(offsets, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], '0 gaps, 0 duplicates')
})

t.test('curl -N reads the event stream', async t => {
  if (spawnSync('curl', ['--version']).status !== 0) {
    console.log('!!! curl -N test SKIPPED: curl is not on PATH')
    t.pass('skipped: curl is not installed')
    return
  }
  const { url } = await build(t)
  await publish(url, 'tools', 'before')
  const curl = spawn('curl', ['-sN', `${url}/sse?clientId=shell&rooms=tools`])
  t.teardown(() => { curl.kill() })
  let out = ''
  curl.stdout.on('data', (c: Buffer) => { out += c.toString() })
  await waitFor(() => parseSse(out).events.some(e => e.event === 'joined'), 'curl to print the joined event')
  await publish(url, 'tools', 'live')
  await waitFor(() => parseSse(out).events.some(e => e.event === 'room_message'), 'curl to print the room message')
  const events = parseSse(out).events
  t.same(events.map(e => e.event), ['welcome', 'joined', 'room_message'])
  t.match(events[2].data, { room: 'tools', offset: 2, data: 'live' })
})

t.test('an EventSource resumes across a server restart by itself (Last-Event-ID): 0 gaps, 0 duplicates', async t => {
  const env = { DATA_DIR: tempDir(t), PORT: String(await freePort()), RATE_LIMIT_MAX: '100000', SHUTDOWN_GRACE_MS: '5000' }
  const first = await startServer(t, env)
  const es = new SseClient(`${first.url}/sse?clientId=reader&rooms=feed`)
  t.teardown(() => es.close())
  await es.log.next('joined')
  const total = 200
  let n = 0
  for (; n < 100; n++) t.equal((await publish(first.url, 'feed', n)).status, 200)
  await es.log.next('room_message', e => e.data.data === 99)
  first.proc.kill('SIGTERM')
  const shutdown = await es.log.next('server_shutdown')
  t.match(shutdown.data, { type: 'server_shutdown', reconnectAfterMs: Number })
  t.equal((await first.exited).code, 0)

  const second = await startServer(t, env)
  // published before the EventSource is back (its retry is reconnectAfterMs): only the resume can deliver these
  for (; n < 150; n++) await publish(second.url, 'feed', n)
  const resumed = await es.log.next('joined')
  t.equal(resumed.data.recovered, true, 'the second server recovered the stream from its id')
  for (; n < total; n++) await publish(second.url, 'feed', n)
  await es.log.until(() => es.log.roomMessages('feed').length >= total)
  const got = es.log.roomMessages('feed').map(m => m.data)
  const dups = got.length - new Set(got).size
  const gaps = total - new Set(got).size
  t.equal(gaps, 0, '0 gaps')
  t.equal(dups, 0, '0 duplicates')
  t.same(got, Array.from({ length: total }, (_, i) => i), 'in order')
  t.equal(es.opens, 2, 'one reconnect')
})

t.test('an id from another epoch is answered by a reset event with the room as it is now', async t => {
  const { url } = await build(t, { RATE_LIMIT_MAX: '100000' })
  for (let i = 1; i <= 3; i++) await publish(url, 'doc', i)
  const stale = new StreamReader(`${url}/stream?clientId=dan&rooms=doc&lastEventId=${encodeURIComponent('doc:0123456789abcdef:2')}`)
  t.teardown(() => stale.close())
  const reset = await stale.log.next('reset')
  t.match(reset.data, { type: 'joined', room: 'doc', recovered: false, reason: 'epoch_changed', offset: 3 })
  t.same(reset.data.missed.map((m: any) => m.data), [1, 2, 3], 'the history of the new epoch, from its start')
  t.match(reset.id, /^doc:[0-9a-f]+:3$/)
  t.not(reset.id.split(':')[1], '0123456789abcdef', 'the id moves to the new epoch')
})

t.test('a garbage, oversized or repeated event id is refused with 400 naming the field', async t => {
  const { url } = await build(t)
  for (const [query, headers, field] of [
    ['lastEventId=garbage', {}, /^lastEventId: /],
    [`lastEventId=${'x'.repeat(11000)}`, {}, /^(lastEventId|querystring\/lastEventId)/],
    ['lastEventId=a:b:c', {}, /^lastEventId: the epoch|^lastEventId: the offset/],
    ['lastEventId=a::1,a::2', {}, /appears twice/],
    ['', { 'last-event-id': 'room:epoch:notanumber' }, /^Last-Event-ID: /],
    ['rooms=a,a', {}, /^rooms: a is listed twice/],
    ['rooms=bad%20name', {}, /^rooms: /]
  ] as Array<[string, Record<string, string>, RegExp]>) {
    const res = await fetch(`${url}/sse?${query.startsWith('rooms=') ? '' : 'rooms=a&'}${query}`, { headers })
    t.equal(res.status, 400, (query || JSON.stringify(headers)).slice(0, 60))
    t.match(await res.json(), { statusCode: 400, code: 'invalid_message', message: field })
  }
  const ok = await requestJson(`${url}/api/status`)
  t.equal(ok.body.connections.total, 0, 'no refused request holds a connection')
})

t.test('auth mode: the token (query or header) is required, its rooms claim decides, and the stream ends when it expires', async t => {
  const { url } = await build(t, { AUTH_SECRET: SECRET, AUTH_EXPIRY_NOTICE_MS: '1000' })
  t.equal((await fetch(`${url}/sse?rooms=a`)).status, 401, 'no token')
  const limited = sign({ sub: 'erin', rooms: ['a'] })
  const forbidden = await fetch(`${url}/sse?rooms=a,b&token=${limited}`)
  t.equal(forbidden.status, 403)
  t.match(await forbidden.json(), { code: 'forbidden', message: /rooms: .*b/ })

  const exp = Math.floor(Date.now() / 1000) + 3
  const reader = new StreamReader(`${url}/stream?rooms=a`, { headers: { authorization: `Bearer ${sign({ sub: 'erin', rooms: ['a'], exp })}` } })
  t.teardown(() => reader.close())
  t.match((await reader.log.next('welcome')).data, { clientId: 'erin', tokenExpiresAt: String })
  await reader.log.next('joined')
  t.match((await reader.log.next('token_expiring')).data, { type: 'token_expiring' })
  t.match((await reader.log.next('close')).data, { type: 'close', reason: 'token_expired', code: 1008 })
  await reader.ended
  t.pass('the stream ended at expiry')
})

t.test('connection caps refuse a stream as they refuse an upgrade (429 per client key, 503 in all), and count streams and sockets together', async t => {
  const { url, wsUrl, app } = await build(t, { MAX_CONNECTIONS: '3', MAX_CONNECTIONS_PER_CLIENT: '2' })
  const a1 = new StreamReader(`${url}/sse`, { localAddress: '127.0.5.1' })
  const a2 = new StreamReader(`${url}/stream`, { localAddress: '127.0.5.1' })
  t.teardown(() => { a1.close(); a2.close() })
  await a1.log.next('welcome')
  await a2.log.next('welcome')
  const a3 = new StreamReader(`${url}/sse`, { localAddress: '127.0.5.1' })
  t.equal((await a3.response, a3.status), 429)
  t.match(await a3.refusal(), { error: 'connection_limit_exceeded', scope: 'client', limit: 2, current: 2 })
  const ws = await TestClient.connect(wsUrl, { localAddress: '127.0.5.2' })
  t.teardown(() => ws.close())
  const b = new StreamReader(`${url}/sse`, { localAddress: '127.0.5.3' })
  t.equal((await b.response, b.status), 503)
  t.match(await b.refusal(), { error: 'connection_limit_exceeded', scope: 'total', limit: 3, current: 3 })
  t.equal(app.sessions.size, 3)
  a1.close()
  await waitFor(() => app.limits.total === 2, 'the closed stream to give its slot back')
  const again = new StreamReader(`${url}/sse`, { localAddress: '127.0.5.1' })
  t.teardown(() => again.close())
  await again.log.next('welcome')
  t.pass('a slot freed by a closed stream is taken again')
})

t.test('an Origin that is not allowed is refused with 403 as on /ws', async t => {
  const { url } = await build(t, { CORS_ORIGINS: 'http://ok.test' })
  t.equal((await fetch(`${url}/sse`, { headers: { origin: 'http://evil.test' } })).status, 403)
  const ok = new StreamReader(`${url}/sse`, { headers: { origin: 'http://ok.test' } })
  t.teardown(() => ok.close())
  await ok.log.next('welcome')
  t.equal(ok.headers['access-control-allow-origin'], 'http://ok.test', 'CORS headers for a browser EventSource on another origin')
})

t.test('graceful shutdown: server_shutdown (with retry:) then the end of the stream', async t => {
  const { url, app } = await build(t)
  const reader = new StreamReader(`${url}/sse?rooms=x`)
  await reader.log.next('joined')
  const closing = app.close()
  t.match((await reader.log.next('server_shutdown')).data, { type: 'server_shutdown', reason: 'server_shutdown', reconnectAfterMs: Number })
  await reader.ended
  await closing
  t.pass('the stream ended and the server closed')
})

t.test('a stream opened while the server shuts down gets 200, server_shutdown with retry: and the position it sent, then the end (a 503 would stop an EventSource for good)', async t => {
  const { url, port, app } = await build(t)
  const first = new StreamReader(`${url}/sse?rooms=news`)
  const joined = await first.log.next('joined')
  // a client that never answers the close holds the shutdown open (up to its close timeout) while the new streams arrive
  const stubborn = await stubbornClient(port)
  t.teardown(() => { stubborn.destroy() })
  const closing = app.close()
  await first.log.next('server_shutdown')
  const at = `news:${joined.data.epoch}:0`
  const sse = await fetch(`${url}/sse?rooms=news`, { headers: { 'last-event-id': at } })
  t.equal(sse.status, 200, 'not an error status: the EventSource reconnects')
  t.match(sse.headers.get('content-type'), /^text\/event-stream/)
  const text = await sse.text()
  t.match(text, /^retry: \d+\n/, 'retry: says when to come back')
  const { events } = parseSse(text)
  t.same(events.map(e => e.event), ['server_shutdown'], 'only the notice, then the end of the response')
  t.equal(events[0].id, at, 'the id is the position the client sent: its Last-Event-ID is kept')
  t.match(events[0].data, { type: 'server_shutdown', reason: 'server_shutdown', reconnectAfterMs: Number })
  const nd = await fetch(`${url}/stream?rooms=news&lastEventId=${encodeURIComponent(at)}`)
  t.equal(nd.status, 200)
  const line = JSON.parse((await nd.text()).trim())
  t.match(line, { id: at, event: 'server_shutdown', data: { type: 'server_shutdown', reconnectAfterMs: Number } })
  const refused = await fetch(`${url}/sse?rooms=news`, { headers: { 'last-event-id': 'not an id' } })
  t.equal(refused.status, 400, 'the request is still checked first: a bad Last-Event-ID is refused with its reason')
  stubborn.destroy()
  await closing
})

t.test('admin: GET /api/admin/connections lists streams by protocol; a disconnect sends `disconnected` and ends the stream; metrics by protocol', async t => {
  const { url, app } = await build(t, { ADMIN_TOKEN, RATE_LIMIT_MAX: '100000' })
  const sse = new StreamReader(`${url}/sse?clientId=frank&rooms=r1`)
  const nd = new StreamReader(`${url}/stream?clientId=gina`)
  t.teardown(() => { sse.close(); nd.close() })
  await sse.log.next('joined')
  await nd.log.next('welcome')
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` }
  const listed = await (await fetch(`${url}/api/admin/connections`, { headers: auth })).json() as any
  const frank = listed.connections.find((c: any) => c.clientId === 'frank')
  t.match(frank, { protocol: 'sse', rooms: ['r1'] })
  t.match(listed.connections.find((c: any) => c.clientId === 'gina'), { protocol: 'stream' })
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /switchboard_connections\{protocol="sse"\} 1/)
  t.match(metrics, /switchboard_connections\{protocol="stream"\} 1/)

  const res = await fetch(`${url}/api/admin/connections/${frank.connectionId}`, { method: 'DELETE', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'bye' }) })
  t.equal(res.status, 200)
  t.match((await sse.log.next('disconnected')).data, { type: 'disconnected', reason: 'bye' })
  await sse.ended
  await waitFor(() => app.sessions.size === 1, 'the stream to leave the registry')
})

t.test('writes over HTTP with the stream\'s token: a publish with an Idempotency-Key repeated reaches the stream once', async t => {
  const { url } = await build(t, { AUTH_SECRET: SECRET })
  const token = sign({ sub: 'hana' })
  const reader = new StreamReader(`${url}/stream?rooms=team&token=${token}`)
  t.teardown(() => reader.close())
  await reader.log.next('joined')
  const headers = { authorization: `Bearer ${token}`, 'idempotency-key': 'k-1' }
  const one = await publish(url, 'team', 'once', headers)
  const two = await publish(url, 'team', 'once', headers)
  t.equal(one.status, 200)
  t.same(two.body, one.body, 'the repeat gets the first response')
  t.equal(two.headers.get('idempotent-replayed'), 'true')
  await publish(url, 'team', 'next', { authorization: `Bearer ${token}` })
  await reader.log.next('room_message', e => e.data.data === 'next')
  t.same(reader.log.roomMessages('team').map(m => m.data), ['once', 'next'], 'published once')
  t.equal(reader.log.roomMessages('team')[0].from, 'hana', 'from the token\'s sub')
})

t.test('a stream that does not read is closed as a slow consumer (WS_MAX_BUFFERED_BYTES)', async t => {
  const { url, app, logs } = await build(t, { WS_MAX_BUFFERED_BYTES: '65536', RATE_LIMIT_MAX: '100000', WS_MAX_PAYLOAD: '1048576' })
  // a raw TCP client that sends its request and never reads
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.pause()
  socket.write('GET /sse?clientId=slow&rooms=flood HTTP/1.1\r\nHost: x\r\n\r\n')
  await waitFor(() => [...app.sessions.all()].some(s => s.rooms.has('flood')), 'the stream to join')
  const big = 'x'.repeat(60000)
  let sent = 0
  while (!logs().some(l => l.event === 'connection.slow_consumer')) {
    await publish(url, 'flood', big)
    sent++
  }
  t.match(logs().find(l => l.event === 'connection.slow_consumer'), { protocol: 'sse', clientId: 'slow', limit: 65536 })
  await waitFor(() => app.sessions.size === 0, 'the slow stream to be gone')
  t.ok(sent > 1, `closed after ${sent} messages of 60 kB`)
})

t.test('heartbeat: an idle stream gets comment lines', async t => {
  const { url } = await build(t, { HEARTBEAT_INTERVAL_MS: '50' })
  let out = ''
  const res = await fetch(`${url}/sse`)
  const body = res.body!.getReader()
  while (parseSse(out).keepalives < 2) out += new TextDecoder().decode((await body.read()).value)
  await body.cancel()
  t.ok(parseSse(out).keepalives >= 2, 'comment lines keep proxies from closing an idle stream')
})

t.test('direct messages sent while no stream was open come right after welcome, oldest first', async t => {
  const { url } = await build(t, { RATE_LIMIT_MAX: '100000' })
  for (const text of ['one', 'two']) {
    const res = await requestJson(`${url}/api/send`, 'POST', { from: 'bot', to: 'ivan', text })
    t.match(res.body, { queued: true, delivered: 0 })
  }
  const reader = new StreamReader(`${url}/sse?clientId=ivan&rooms=r`)
  t.teardown(() => reader.close())
  await reader.log.next('joined')
  await reader.log.until(events => events.filter(e => e.event === 'message').length === 2)
  t.equal(reader.log.events[0].event, 'welcome')
  t.same(reader.log.events.filter(e => e.event === 'message').map(e => e.data.text), ['one', 'two'], 'oldest first')
})
