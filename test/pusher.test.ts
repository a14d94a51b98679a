import { test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { build, tempDir, waitFor } from './support/helper.js'
import { loadConfig } from '../plugins/core/index.js'
import { loadApps } from '../plugins/pusher/apps.js'
import { channelAuthString, sign, userAuthString, verifyRequest } from '../plugins/pusher/signatures.js'
import { APP, APP_ENV, RawPusher, connected, once, pusherClient, sdkFor, subscribed } from './support/pusher-clients.js'

test('signatures match the Pusher documentation and the SDK vectors', async t => {
  const secret = '7ad3773142a6692b25b8'
  t.equal(sign(secret, channelAuthString('1234.1234', 'private-foobar')), '58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4')
  t.equal(sign(secret, channelAuthString('1234.1234', 'presence-foobar', '{"user_id":"10","user_info":{"name":"Mr. Channels"}}')), '4c6d8fc42a207ba96a0779844171b0bb819d96ffceef9609f5cce596ab17a800')
  t.equal(sign(secret, userAuthString('1234.1234', '{"id":"42","user_info":{"name":"A"}}')), 'e7d03516243e30c0fb5a863be4468f809284892a92d67b67004ec3c16455ab3f')
  // the REST API's worked example
  const body = '{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
  const query = { auth_key: '278d425bdf160c739803', auth_timestamp: '1353088179', auth_version: '1.0', body_md5: 'ec365a775a4cd0599faeb73354201b6f', auth_signature: 'da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c' }
  const args = { method: 'POST', path: '/apps/3/events', query, body, key: '278d425bdf160c739803', secret, now: 1353088179000 }
  t.same(verifyRequest(args), { ok: true })
  t.match(verifyRequest({ ...args, now: (1353088179 + 601) * 1000 }), { ok: false, status: 401, message: /Timestamp expired/ })
  t.match(verifyRequest({ ...args, body: body.replace('foo', 'bar') }), { ok: false, status: 401, message: /body_md5/ })
  t.match(verifyRequest({ ...args, query: { ...query, auth_signature: query.auth_signature.replace('d', 'e') } }), { ok: false, status: 401, message: /Invalid signature/ })
})

test('apps: none without configuration, one from PUSHER_APP_*, several from PUSHER_APPS_FILE, errors named', async t => {
  t.same(loadApps(loadConfig({})), [])
  t.throws(() => loadApps(loadConfig({ PUSHER_APP_ID: 'a', PUSHER_APP_KEY: 'k' })), /PUSHER_APP_ID, PUSHER_APP_KEY and PUSHER_APP_SECRET must be set together/)
  const one = loadApps(loadConfig({ ...APP_ENV, PUSHER_WEBHOOK_URL: 'http://127.0.0.1:9/hook' }))
  t.match(one, [{ id: APP.id, key: APP.key, secret: APP.secret, webhooks: [{ url: 'http://127.0.0.1:9/hook', headers: {}, eventTypes: null }], maxClientEventsPerSecond: 10 }])
  const dir = tempDir(t)
  const file = join(dir, 'apps.json')
  writeFileSync(file, JSON.stringify({ apps: [{ id: 'a1', key: 'k1', secret: 's1', maxConnections: 5 }, { id: 'a2', key: 'k2', secret: 's2', webhooks: ['https://example.com/h'] }] }))
  t.match(loadApps(loadConfig({ PUSHER_APPS_FILE: file })), [{ id: 'a1', maxConnections: 5, webhooks: [] }, { id: 'a2', webhooks: [{ url: 'https://example.com/h', headers: {}, eventTypes: null }] }])
  writeFileSync(file, JSON.stringify([{ id: 'a1', key: 'k1', secret: 's1', maxConnections: 0 }]))
  t.throws(() => loadApps(loadConfig({ PUSHER_APPS_FILE: file })), /apps\[0\]: maxConnections must be an integer >= 1, or -1 for no limit \(got 0\)/)
  writeFileSync(file, JSON.stringify([{ id: 'a1', key: 'k1', secret: 's1' }, { id: 'a1', key: 'k2', secret: 's2' }]))
  t.throws(() => loadApps(loadConfig({ PUSHER_APPS_FILE: file })), /app id a1 is defined twice/)
})

test('without a Pusher app nothing is exposed', async t => {
  const s = await build(t)
  const events = await fetch(`${s.url}/apps/1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(events.status, 404)
  const ws = await fetch(`${s.url}/app/key`)
  t.equal(ws.status, 404)
  const status = await (await fetch(`${s.url}/api/status`)).json() as Record<string, unknown>
  t.equal(status.pusher, undefined)
})

test('pusher-js: public, private and presence channels with SDK-signed auth, events from the SDK', async t => {
  const s = await build(t, { ...APP_ENV, PUSHER_ACTIVITY_TIMEOUT_S: '30' })
  const sdk = sdkFor(s.port)
  const alice = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'alice', user_info: { name: 'Alice' } }) })
  const bob = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 7, user_info: { name: 'Bob' } }) })
  await Promise.all([connected(alice), connected(bob)])
  t.match(alice.connection.socket_id, /^\d+\.\d+$/)

  const pub = await subscribed(alice, 'orders')
  const priv = await subscribed(alice, 'private-orders.1')
  const got = Promise.all([once(pub, 'shipped'), once(priv, 'App\\Events\\Paid')])
  await sdk.trigger('orders', 'shipped', { id: 1 })
  await sdk.trigger(['private-orders.1'], 'App\\Events\\Paid', { id: 2 })
  t.same(await got, [{ id: 1 }, { id: 2 }])

  const room = await subscribed(alice, 'presence-room')
  t.equal(room.members!.count, 1)
  t.same(room.members!.me, { id: 'alice', info: { name: 'Alice' } })
  const joined = once(room, 'pusher:member_added')
  const bobRoom = await subscribed(bob, 'presence-room')
  t.same(await joined, { id: '7', info: { name: 'Bob' } })
  t.equal(bobRoom.members!.count, 2)
  t.same(bobRoom.members!.members, { alice: { name: 'Alice' }, 7: { name: 'Bob' } })

  const users = await (await sdk.get({ path: '/channels/presence-room/users' })).json()
  t.same(users.users.map((u: { id: unknown }) => String(u.id)).sort(), ['7', 'alice'])
  const left = once(room, 'pusher:member_removed')
  bob.unsubscribe('presence-room')
  t.same(await left, { id: '7', info: { name: 'Bob' } })

  // a forged signature: the channel's error callback fires with the server's 401
  const forged = pusherClient(t, s.port, { extra: { channelAuthorization: { customHandler: (_p: unknown, cb: (e: null, a: unknown) => void) => cb(null, { auth: `${APP.key}:${'0'.repeat(64)}` }) } } })
  const err = await once(forged.subscribe('private-secret'), 'pusher:subscription_error')
  t.match(err, { type: 'AuthError', status: 401, error: /Invalid signature/ })
})

test('the protocol refuses with its close codes; ping is answered; bad frames get pusher:error and the socket stays', async t => {
  const s = await build(t, APP_ENV)
  const unknown = await RawPusher.open(t, s.port, '/app/nope?protocol=7')
  t.match(await unknown.next(f => f.event === 'pusher:error', 'error'), { data: { code: 4001, message: /App key nope does not exist/ } })
  t.match(await unknown.closed, { code: 4001 })
  const noProtocol = await RawPusher.open(t, s.port, `/app/${APP.key}`)
  t.match(await noProtocol.closed, { code: 4008 })
  const badVersion = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=x`)
  t.match(await badVersion.closed, { code: 4006 })
  const old = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=4`)
  t.match(await old.closed, { code: 4007 })

  const c = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7&client=js&version=8.6.0`)
  const socketId = await c.established()
  t.match(c.frames[0].parsed, { socket_id: socketId, activity_timeout: 120 })
  c.send('pusher:ping', {})
  await c.next(f => f.event === 'pusher:pong', 'pong')
  c.ws.send('not json')
  t.match(await c.next(f => f.event === 'pusher:error', 'error'), { data: { code: 4300, message: /must be JSON/ } })
  c.send('pusher:subscribe', { channel: 'bad channel!' })
  t.match(await c.next(f => f.event === 'pusher:subscription_error', 'subscription error'), { channel: 'bad channel!', data: { status: 400, error: /channel: must be 1 to 164 characters/ } })
  c.send('pusher:subscribe', { channel: 'presence-x', auth: `${APP.key}:x` })
  t.match(await c.next(f => f.event === 'pusher:subscription_error' && f.channel === 'presence-x', 'presence error'), { data: { status: 400, error: /channel_data/ } })
  c.send('pusher:subscribe', { channel: 'open' })
  t.match(await c.next(f => f.event === 'pusher_internal:subscription_succeeded', 'subscribed'), { channel: 'open', data: '{}' })

  // a plain HTTP GET of the endpoint is told what it is
  const plain = await fetch(`${s.url}/app/${APP.key}`)
  t.equal(plain.status, 426)
})

test('the activity timeout: a silent client is pinged, and a pong keeps it open', async t => {
  const s = await build(t, { ...APP_ENV, PUSHER_ACTIVITY_TIMEOUT_S: '1' }, { app: {} })
  const c = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  t.match((await c.next(f => f.event === 'pusher:connection_established', 'established')).parsed, { activity_timeout: 1 })
  await c.next(f => f.event === 'pusher:ping', 'server ping')
  // pongTimeoutMs is 30 s by default: answering keeps the connection
  c.send('pusher:pong', {})
  const from = c.frames.length
  await c.next(f => f.event === 'pusher:ping', 'second server ping', from)
  t.equal(c.ws.readyState, 1)
})

test('connection limits and the Origin check apply to /app/:key; a JWT is not needed in auth mode', async t => {
  const s = await build(t, { ...APP_ENV, AUTH_SECRET: 'x'.repeat(32), MAX_CONNECTIONS_PER_CLIENT: '2' })
  const a = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  await a.established()
  const b = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  await b.established()
  await t.rejects(RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`), /429/)
  await t.rejects(RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`, { origin: 'http://evil.example' }), /403/)
  // the native endpoint still wants its token
  const { tryUpgrade } = await import('./support/ws-client.js')
  t.equal((await tryUpgrade(s.wsUrl)).status, 401)
})

test('per-app connection quota: past maxConnections a socket gets 4004', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'apps.json')
  writeFileSync(file, JSON.stringify([{ id: 'small', key: 'small-key', secret: 's', maxConnections: 1 }]))
  const s = await build(t, { PUSHER_APPS_FILE: file })
  const a = await RawPusher.open(t, s.port, '/app/small-key?protocol=7')
  await a.established()
  const b = await RawPusher.open(t, s.port, '/app/small-key?protocol=7')
  t.match(await b.next(f => f.event === 'pusher:error', 'quota error'), { data: { code: 4004 } })
  t.match(await b.closed, { code: 4004 })
  await waitFor(() => s.app.pusher.get('small')!.sockets.size === 1, 'one socket')
})

test('a client that does not answer the server ping is closed with 4201 (PusherSocket with a short pong timeout)', async t => {
  const { WebSocketServer } = await import('ws')
  const { PusherSocket } = await import('../plugins/pusher/ws-protocol.js')
  const { Session } = await import('../plugins/engine/sessions.js')
  const { ChannelRegistry } = await import('../plugins/pusher/channels/registry.js')
  const { parseApp } = await import('../plugins/pusher/apps.js')
  const pino = (await import('pino')).default
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  t.teardown(() => wss.close())
  await new Promise(resolve => wss.once('listening', resolve))
  const noop = () => {}
  wss.on('connection', ws => {
    const ctx = { app: parseApp('test', APP), registry: new ChannelRegistry({ occupied: noop, vacated: noop }), log: pino({ level: 'silent' }), activityTimeoutS: 1, pongTimeoutMs: 200, webhook: noop, count: noop, publish: async () => {}, bridge: noop, maxDepth: 64, messagesPerSecond: 50, reachable: async () => {}, userReachable: async () => {}, cached: async () => undefined, members: async () => new Map(), admitMember: async () => 'added' as const, memberLeft: noop, memberAdded: noop, announce: noop }
    const s = new PusherSocket(new Session(ws, 'pusher-1.1', '127.0.0.1', '127.0.0.1'), ctx, '1.1')
    ws.on('message', d => s.handle(d.toString()))
    ws.on('close', () => s.closedNow())
    s.start()
  })
  const port = (wss.address() as { port: number }).port
  const c = await RawPusher.open(t, port, '/')
  await c.established()
  await c.next(f => f.event === 'pusher:ping', 'server ping')
  t.match(await c.closed, { code: 4201, reason: 'Pong reply not received' })
  t.match(c.frames.at(-1), { event: 'pusher:error', data: { code: 4201 } })
})

test('status and metrics cover the Pusher protocol', async t => {
  const s = await build(t, APP_ENV)
  const c = pusherClient(t, s.port)
  await connected(c)
  await subscribed(c, 'news')
  await sdkFor(s.port).trigger('news', 'x', {})
  const status = await (await fetch(`${s.url}/api/status`)).json() as { pusher?: { apps: Array<Record<string, unknown>> } }
  t.match(status.pusher, { apps: [{ id: APP.id, connections: 1, channels: 1, webhooks: 0 }] })
  const metrics = await (await fetch(`${s.url}/metrics`)).text()
  t.match(metrics, /switchboard_pusher_connections\{app="app-1"\} 1/)
  t.match(metrics, /switchboard_pusher_channels\{app="app-1"\} 1/)
  t.match(metrics, /switchboard_pusher_api_events_total 1/)
  t.match(metrics, /switchboard_pusher_messages_total\{direction="in",kind="pusher:subscribe"\} 1/)
  t.ok(s.logs().some(l => l.event === 'pusher.connection_open' && l.appId === APP.id))
})
