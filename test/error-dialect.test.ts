import t from 'tap'
import { build } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'

const json = { 'content-type': 'application/json' }

t.test('the same mistake gets the same code and message over WebSocket and HTTP, naming the field and the limit', async t => {
  const { url, wsUrl } = await build(t, { RATE_LIMIT_MAX: '1000' })
  const c = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => c.close())
  const long = 'x'.repeat(32769)
  const room129 = 'r'.repeat(129)

  // [what, WebSocket frame, HTTP method, path, body (a string is sent as is), expected message]
  const cases: Array<[string, string, string, string, unknown, RegExp]> = [
    ['text over its limit', JSON.stringify({ type: 'send', to: 'bob', text: long }), 'POST', '/api/send', { from: 'alice', to: 'bob', text: long }, /^text: must be at most 32768 characters$/],
    ['text missing', JSON.stringify({ type: 'send', to: 'bob' }), 'POST', '/api/send', { from: 'alice', to: 'bob' }, /^text: is required$/],
    ['text empty', JSON.stringify({ type: 'send', to: 'bob', text: '' }), 'POST', '/api/send', { from: 'alice', to: 'bob', text: '' }, /^text: must be at least 1 character$/],
    ['recipient empty', JSON.stringify({ type: 'send', to: '', text: 'x' }), 'POST', '/api/send', { from: 'alice', to: '', text: 'x' }, /^to: must be at least 1 character$/],
    ['recipient with a space', JSON.stringify({ type: 'send', to: 'b b', text: 'x' }), 'POST', '/api/send', { from: 'alice', to: 'b b', text: 'x' }, /^to: must match \^\[A-Za-z0-9_\.:@-\]\+\$$/],
    ['room name with a space', JSON.stringify({ type: 'publish', room: 'bad name', data: 1 }), 'POST', '/api/rooms/bad%20name/publish', { data: 1 }, /^room: must match \^\[A-Za-z0-9_\.:-\]\+\$$/],
    ['room name over its limit', JSON.stringify({ type: 'update', room: room129, patch: {} }), 'PATCH', `/api/rooms/${room129}/state`, { patch: {} }, /^room: must be at most 128 characters$/],
    ['patch not an object', JSON.stringify({ type: 'update', room: 'doc', patch: 5 }), 'PATCH', '/api/rooms/doc/state', { patch: 5 }, /^patch: must be an object$/],
    ['negative baseVersion', JSON.stringify({ type: 'update', room: 'doc', patch: {}, baseVersion: -1 }), 'PATCH', '/api/rooms/doc/state', { patch: {}, baseVersion: -1 }, /^baseVersion: must be >= 0$/],
    ['a __proto__ key', '{"type":"send","to":"bob","text":"x","__proto__":{"polluted":true}}', 'POST', '/api/send', '{"from":"alice","to":"bob","text":"x","__proto__":{"polluted":true}}', /^forbidden property name __proto__$/],
    ['a constructor.prototype key', '{"type":"send","to":"bob","text":"x","constructor":{"prototype":{"polluted":true}}}', 'POST', '/api/send', '{"from":"alice","to":"bob","text":"x","constructor":{"prototype":{"polluted":true}}}', /^forbidden property name constructor\.prototype$/],
    ['text that is not JSON', '{not json', 'POST', '/api/send', '{not json', /^not valid JSON \(.+\)$/]
  ]
  for (const [what, frame, method, path, body, message] of cases) {
    c.send(frame)
    const ws = await c.next('error')
    const res = await fetch(`${url}${path}`, { method, headers: json, body: typeof body === 'string' ? body : JSON.stringify(body) })
    const http = await res.json() as Record<string, unknown>
    t.equal(res.status, 400, `${what}: HTTP 400`)
    t.match(ws, { code: 'invalid_message', message }, `${what}: WebSocket says ${ws.message}`)
    t.same({ code: http.code, message: http.message }, { code: ws.code, message: ws.message }, `${what}: HTTP says the same`)
    t.match(http, { statusCode: 400, error: 'Bad Request' }, `${what}: in Fastify's shape`)
  }
  t.equal(({} as any).polluted, undefined, 'no prototype was polluted')
  t.equal((await c.request({ type: 'ping' })).type, 'pong', 'the connection survived every mistake')
})

t.test('every HTTP error reply carries a code', async t => {
  const { url, wsUrl } = await build(t, { RATE_LIMIT_MAX: '12', AUTH_SECRET: 'an-error-dialect-secret-of-32-bytes!' })
  const noToken = await fetch(`${url}/api/status`)
  t.match(await noToken.json(), { statusCode: 401, code: 'unauthorized', message: /token/ }, '401 without a token')
  const upgrade = await tryUpgrade(wsUrl)
  t.match(upgrade, { status: 401, body: { code: 'unauthorized' } }, 'a refused upgrade too')

  const open = await build(t, { RATE_LIMIT_MAX: '12' })
  const post = (path: string, body: string, type = 'application/json') => fetch(`${open.url}${path}`, { method: 'POST', headers: { 'content-type': type }, body })
  const huge = await post('/api/send', JSON.stringify({ from: 'a', to: 'b', text: 'x'.repeat(2 * 1048576) }))
  t.equal(huge.status, 413)
  t.match(await huge.json(), { statusCode: 413, error: 'Payload Too Large', code: 'payload_too_large', message: 'body: must be at most 1048576 bytes' }, 'the body limit')
  const bigData = await post('/api/rooms/doc/publish', JSON.stringify({ data: 'x'.repeat(70000) }))
  t.match(await bigData.json(), { statusCode: 413, code: 'payload_too_large', message: /^data: must be at most 65536 bytes/ }, 'a publish larger than WS_MAX_PAYLOAD')
  const xml = await post('/api/send', '<send/>', 'application/xml')
  t.equal(xml.status, 415)
  t.match(await xml.json(), { statusCode: 415, code: 'unsupported_media_type', message: /application\/xml.*application\/json/ }, 'an unsupported content-type')
  const empty = await post('/api/send', '')
  t.match(await empty.json(), { statusCode: 400, code: 'invalid_message', message: /^body: / }, 'an empty JSON body')
  const missing = await fetch(`${open.url}/api/rooms/never-used`)
  t.match(await missing.json(), { statusCode: 404, code: 'not_found', message: /never been used/ }, 'a room never used')
  const unknown = await fetch(`${open.url}/no/such/route?token=secret-in-query`)
  t.equal(unknown.status, 404)
  t.same(await unknown.json(), { statusCode: 404, error: 'Not Found', code: 'not_found', message: 'Route GET:/no/such/route not found' }, 'an unknown route, without echoing its query')
  const wrongMethod = await fetch(`${open.url}/health`, { method: 'DELETE' })
  t.match(await wrongMethod.json(), { statusCode: 404, code: 'not_found', message: 'Route DELETE:/health not found' }, 'a method a route does not take')
  await fetch(`${open.url}/api/rooms/doc/state`, { method: 'PATCH', headers: json, body: JSON.stringify({ patch: { a: 1 } }) })
  const conflict = await fetch(`${open.url}/api/rooms/doc/state`, { method: 'PATCH', headers: json, body: JSON.stringify({ patch: { a: 2 }, baseVersion: 0 }) })
  t.match(await conflict.json(), { statusCode: 409, code: 'version_conflict', currentVersion: 1 }, 'a version conflict')
  const origin = await tryUpgrade(open.wsUrl, { headers: { origin: 'https://evil.example' } })
  t.match(origin, { status: 403, body: { code: 'forbidden' } }, 'an upgrade from a foreign origin')
  let limited: Response | undefined
  for (let i = 0; i < 20 && !limited; i++) {
    const res = await fetch(`${open.url}/api/status`)
    if (res.status === 429) limited = res
  }
  t.ok(limited, 'the rate limit was reached')
  t.match(await limited?.json(), { statusCode: 429, code: 'rate_limited', message: /^more than 12 requests per 60000 ms/ }, 'the rate limit names its bound')
})

t.test('unknown_type lists the known types', async t => {
  const { wsUrl, app } = await build(t)
  const c = await TestClient.connect(wsUrl)
  t.teardown(() => c.close())
  const err = await c.request({ type: 'teleport' })
  t.match(err, { type: 'error', code: 'unknown_type', message: /"teleport"/ })
  t.same(err.knownTypes, app.dispatcher.types, 'knownTypes is the dispatcher registry')
  t.same([...err.knownTypes].sort(), ['exec', 'join', 'leave', 'ping', 'publish', 'refresh', 'rpc', 'send', 'update'])
  for (const type of err.knownTypes) t.match(err.message, new RegExp(`\\b${type}\\b`), `the message names ${type}`)
})

t.test('welcome.limits announces every limit a client can hit, as configured and as enforced', async t => {
  const env = { WS_MAX_PAYLOAD: '50000', WS_MESSAGES_PER_SECOND: '7', MAX_ROOMS_PER_CONNECTION: '3', ROOM_HISTORY_SIZE: '9', ROOM_STATE_MAX_BYTES: '2048', RATE_LIMIT_MAX: '1000' }
  const { wsUrl, url, app } = await build(t, env)
  const c = await TestClient.connect(wsUrl, { clientId: 'limits' })
  t.teardown(() => c.close())
  const l = c.welcome.limits
  t.match(l, {
    maxPayload: 50000,
    messagesPerSecond: 7,
    messageBurst: 14,
    maxRoomsPerConnection: 3,
    roomHistorySize: 9,
    roomStateMaxBytes: 2048,
    textMaxLength: 32768,
    roomNameMaxLength: 128,
    roomNamePattern: '^[A-Za-z0-9_.:-]+$',
    clientIdMaxLength: 64,
    clientIdPattern: '^[A-Za-z0-9_.:@-]+$',
    execCodeMaxLength: 16384,
    requestIdMaxLength: 128
  }, 'each configured value')
  t.same(Object.keys(l).filter(k => l[k] === undefined || l[k] === null), [], 'no limit is missing')
  t.equal(l.maxPayload, app.config.WS_MAX_PAYLOAD)

  // each announced bound is the enforced one: at the bound accepted, one past it refused naming it
  t.match(await c.request({ type: 'send', to: 'nobody', text: 'x'.repeat(l.textMaxLength) }), { type: 'ack' }, 'text at textMaxLength')
  t.match(await c.request({ type: 'send', to: 'nobody', text: 'x'.repeat(l.textMaxLength + 1) }), { code: 'invalid_message', message: `text: must be at most ${l.textMaxLength} characters` })
  t.match(await c.request({ type: 'join', room: 'r'.repeat(l.roomNameMaxLength) }), { type: 'joined' }, 'a room name at roomNameMaxLength')
  t.match(await c.request({ type: 'join', room: 'r'.repeat(l.roomNameMaxLength + 1) }), { code: 'invalid_message', message: `room: must be at most ${l.roomNameMaxLength} characters` })
  t.match(await c.request({ type: 'join', room: 'a/b' }), { code: 'invalid_message', message: `room: must match ${l.roomNamePattern}` })
  t.match(await c.request({ type: 'exec', room: 'x', code: 'x'.repeat(l.execCodeMaxLength + 1) }), { code: 'invalid_message', message: `code: must be at most ${l.execCodeMaxLength} characters` })
  c.send({ type: 'ping', id: 'i'.repeat(l.requestIdMaxLength) })
  t.match(await c.next('pong'), { id: 'i'.repeat(l.requestIdMaxLength) }, 'an id at requestIdMaxLength')
  c.send({ type: 'ping', id: 'i'.repeat(l.requestIdMaxLength + 1) })
  t.match(await c.next('error'), { code: 'invalid_message', message: `id: must be a string of at most ${l.requestIdMaxLength} characters or a number` })
  const longRoom = await fetch(`${url}/api/rooms/${'r'.repeat(l.roomNameMaxLength)}/publish`, { method: 'POST', headers: json, body: '{"data":1}' })
  t.equal(longRoom.status, 200, 'HTTP takes a room name at roomNameMaxLength too')
  for (let i = 1; i < l.maxRoomsPerConnection; i++) await c.request({ type: 'join', room: `room${i}` })
  t.match(await c.request({ type: 'join', room: 'one-too-many' }), { code: 'room_limit', limit: l.maxRoomsPerConnection })
  const state = await fetch(`${url}/api/rooms/big/state`, { method: 'PATCH', headers: json, body: JSON.stringify({ patch: { s: 'x'.repeat(l.roomStateMaxBytes) } }) })
  t.match(await state.json(), { code: 'state_too_large', maxBytes: l.roomStateMaxBytes })
  const okId = await tryUpgrade(wsUrl, { query: { clientId: 'c'.repeat(l.clientIdMaxLength) } })
  t.equal(okId.status, 101, 'a clientId at clientIdMaxLength')
  const longId = await tryUpgrade(wsUrl, { query: { clientId: 'c'.repeat(l.clientIdMaxLength + 1) } })
  t.match(longId, { status: 400, body: { code: 'invalid_message', message: `clientId: must be at most ${l.clientIdMaxLength} characters` } })
  const badId = await tryUpgrade(wsUrl, { query: { clientId: 'a b' } })
  t.match(badId, { status: 400, body: { code: 'invalid_message', message: `clientId: must match ${l.clientIdPattern}` } })
})
