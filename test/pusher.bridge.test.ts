import { test } from 'tap'
import { createSigner } from 'fast-jwt'
import { build, type Built, type TestContext } from './support/helper.js'
import { TestClient, type Msg } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'
import { APP, APP_ENV, connected, once, pusherClient, sdkFor, subscribed } from './support/pusher-clients.js'
import { loadConfig } from '../plugins/core/config.js'
import { loadApps, parseApp } from '../plugins/pusher/apps.js'
import { bridgedChannel, bridgedRoom } from '../plugins/pusher/bridge.js'

const SECRET = 'bridge-test-secret-0123456789abcdef'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)
const MASTER_KEY = Buffer.alloc(32, 9).toString('base64')
const BRIDGE_ENV = { ...APP_ENV, PUSHER_BRIDGE_ROOM_PREFIX: 'pusher.', PUSHER_BRIDGE_PRIVATE: 'true', AUTH_SECRET: SECRET }

async function native (t: TestContext, s: Built, clientId: string, rooms?: string[]): Promise<TestClient> {
  const c = await TestClient.connect(s.wsUrl, rooms === undefined ? { clientId } : { token: sign({ sub: clientId, rooms }) })
  t.teardown(() => c.ws.terminate())
  return c
}

const messages = (c: TestClient, room: string): Msg[] => c.all('room_message').filter(m => m.room === room)

test('the mapping: which channels are bridged to which rooms, and the configuration is checked', async t => {
  const app = parseApp('t', { ...APP, bridgeRoomPrefix: 'pusher.' })
  t.equal(bridgedRoom(app, 'news'), 'pusher.news')
  t.equal(bridgedRoom(app, 'cache-scores'), 'pusher.cache-scores', 'public cache channels are bridged')
  t.equal(bridgedRoom(app, 'private-orders'), undefined, 'private channels only with bridgePrivate')
  t.equal(bridgedRoom(app, 'presence-lobby'), undefined, 'presence channels only with bridgePrivate')
  t.equal(bridgedRoom(app, 'a=b'), undefined, 'a channel whose name is no room name is not bridged')
  t.equal(bridgedRoom(app, 'x'.repeat(125)), undefined, 'nor one past the room name length')
  const all = parseApp('t', { ...APP, bridgeRoomPrefix: 'pusher.', bridgePrivate: true })
  t.equal(bridgedRoom(all, 'private-orders'), 'pusher.private-orders')
  t.equal(bridgedRoom(all, 'presence-lobby'), 'pusher.presence-lobby')
  t.equal(bridgedRoom(all, 'private-encrypted-vault'), undefined, 'encrypted channels never')
  t.equal(bridgedRoom(all, 'private-encrypted-cache-vault'), undefined, 'encrypted cache channels never')
  t.equal(bridgedRoom(all, '#server-to-user-ann'), undefined, 'user channels never')
  t.equal(bridgedChannel(all, 'pusher.news'), 'news')
  t.equal(bridgedChannel(all, 'pusher.private-encrypted-vault'), undefined)
  t.equal(bridgedChannel(all, 'news'), undefined, 'a room without the prefix is no channel')
  t.equal(bridgedRoom(parseApp('t', APP), 'news'), undefined, 'no prefix, no bridge')

  t.throws(() => parseApp('PUSHER_APPS_FILE apps[0]', { ...APP, bridgeRoomPrefix: 'a/b' }), /apps\[0\]: bridgeRoomPrefix must be a native room name prefix/)
  t.throws(() => parseApp('PUSHER_APPS_FILE apps[0]', { ...APP, bridgePrivate: true }), /bridgePrivate must be false without a bridgeRoomPrefix/)
  t.throws(() => loadApps(loadConfig({ PUSHER_BRIDGE_ROOM_PREFIX: 'p.' })), /PUSHER_BRIDGE_ROOM_PREFIX needs PUSHER_APP_ID/)
  t.throws(() => loadConfig({ ...APP_ENV, PUSHER_BRIDGE_ROOM_PREFIX: 'a b' }), /PUSHER_BRIDGE_ROOM_PREFIX/)
  const { writeFileSync, mkdtempSync } = await import('node:fs')
  const { join } = await import('node:path')
  const { tmpdir } = await import('node:os')
  const file = join(mkdtempSync(join(tmpdir(), 'bridge-')), 'apps.json')
  writeFileSync(file, JSON.stringify([{ ...APP, bridgeRoomPrefix: 'p.' }, { id: 'app-2', key: 'key-2', secret: 's', bridgeRoomPrefix: 'p.shop.' }]))
  t.throws(() => loadApps({ PUSHER_APPS_FILE: file }), /bridgeRoomPrefix "p.shop." starts with "p."/)
})

test('one instance: a native room and its Pusher channel see each other\'s events; the rooms claim decides private channels; encrypted ones are not bridged', async t => {
  const s = await build(t, BRIDGE_ENV)
  const sdk = sdkFor(s.port, APP, { encryptionMasterKeyBase64: MASTER_KEY })
  const p = pusherClient(t, s.port, { sdk })
  await connected(p)
  const [news, orders, vault] = await Promise.all([subscribed(p, 'news'), subscribed(p, 'private-orders'), subscribed(p, 'private-encrypted-vault')])
  const ann = await native(t, s, 'ann', ['pusher.*'])
  for (const room of ['pusher.news', 'pusher.private-orders', 'pusher.private-encrypted-vault']) {
    t.equal((await ann.request({ type: 'join', room })).type, 'joined', `ann joins ${room}`)
  }

  // Pusher → native: an SDK-triggered event is a room message with an offset, in the room's history
  await sdk.trigger('news', 'posted', { n: 1 })
  const got = await ann.waitFor(m => m.type === 'room_message' && m.room === 'pusher.news', 'bridged event')
  t.match(got, { from: 'pusher:app-1', offset: 1, data: { event: 'posted', data: { n: 1 } } })
  const history = await ann.request({ type: 'join', room: 'pusher.news', since: 0 })
  t.same(history.missed.map((m: Msg) => m.data), [{ event: 'posted', data: { n: 1 } }], 'stored like any room message')

  // native → Pusher: {event, data} is that event; anything else is room_message with the native fields
  const reply = once(news, 'reply')
  t.equal((await ann.request({ type: 'publish', room: 'pusher.news', data: { event: 'reply', data: { ok: true } } })).type, 'ack')
  t.same(await reply, { ok: true })
  const plain = once(news, 'room_message')
  await ann.request({ type: 'publish', room: 'pusher.news', data: 'hello' })
  t.match(await plain, { from: 'ann', offset: 3, data: 'hello' })
  t.same(messages(ann, 'pusher.news').map(m => m.offset), [1, 2, 3], 'each message reached the native member once: nothing came back over the bridge')

  // private channels: a client event reaches the room (with the client's event name), not the sender
  const typed = ann.waitFor(m => m.type === 'room_message' && m.room === 'pusher.private-orders', 'client event in room')
  orders.trigger('client-typing', { who: 'p' })
  t.match(await typed, { data: { event: 'client-typing', data: { who: 'p' } } })
  const bob = await native(t, s, 'bob', ['pusher.news'])
  t.match(await bob.request({ type: 'join', room: 'pusher.private-orders' }), { type: 'error', code: 'forbidden' }, 'a token without the room in its claim cannot join the private channel\'s room')
  t.match(await bob.request({ type: 'join', room: 'pusher.news' }), { type: 'joined' }, 'the public one it may')

  // encrypted: neither direction crosses (the markers after each prove the wait was long enough)
  const vaultGot: unknown[] = []
  vault.bind('opened', (d: unknown) => vaultGot.push(d))
  vault.bind('room_message', (d: unknown) => vaultGot.push(d))
  const decrypted = once(vault, 'opened')
  await sdk.trigger('private-encrypted-vault', 'opened', { code: 1 })
  t.same(await decrypted, { code: 1 }, 'the encrypted channel itself works')
  vaultGot.length = 0
  await ann.request({ type: 'publish', room: 'pusher.private-encrypted-vault', data: { event: 'opened', data: 'plain' } })
  const marker = once(news, 'marker')
  await ann.request({ type: 'publish', room: 'pusher.news', data: { event: 'marker', data: {} } })
  await marker
  t.same(vaultGot, [], 'a native publish does not reach the encrypted channel')
  await sdk.trigger('news', 'marker2', {})
  await ann.waitFor(m => m.type === 'room_message' && m.data?.event === 'marker2', 'marker2')
  t.same(messages(ann, 'pusher.private-encrypted-vault').map(m => m.from), ['ann'], 'the encrypted event did not reach the room: only ann\'s own publish is there')

  // the HTTP API's publish is a native publish too
  const viaHttp = once(news, 'room_message')
  const res = await fetch(`${s.url}/api/rooms/pusher.news/publish`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${sign({ sub: 'svc', rooms: ['*'], role: 'service' })}` }, body: JSON.stringify({ data: { n: 9 } }) })
  t.equal(res.status, 200)
  t.match(await viaHttp, { from: 'server', data: { n: 9 } }, 'a service token publishes as server')
})

test('bridgePrivate needs AUTH_SECRET: without it the server does not start, naming the app', async t => {
  await t.rejects(build(t, { ...APP_ENV, PUSHER_BRIDGE_ROOM_PREFIX: 'pusher.', PUSHER_BRIDGE_PRIVATE: 'true' }), /Pusher app app-1: bridgePrivate \(PUSHER_BRIDGE_PRIVATE\) needs AUTH_SECRET/)
})

test('a room message larger than the app\'s maxEventPayloadBytes is not sent to the channel (logged)', async t => {
  const s = await build(t, BRIDGE_ENV)
  const p = pusherClient(t, s.port)
  await connected(p)
  const news = await subscribed(p, 'news')
  const ann = await native(t, s, 'ann', ['pusher.*'])
  await ann.request({ type: 'join', room: 'pusher.news' })
  const got: unknown[] = []
  news.bind('big', (d: unknown) => got.push(d))
  t.equal((await ann.request({ type: 'publish', room: 'pusher.news', data: { event: 'big', data: 'x'.repeat(11000) } })).type, 'ack', 'the native publish itself succeeds')
  const marker = once(news, 'small')
  await ann.request({ type: 'publish', room: 'pusher.news', data: { event: 'small', data: 'x' } })
  await marker
  t.same(got, [])
  t.match(s.logs().find(l => l.event === 'pusher.bridge_dropped'), { channel: 'news', room: 'pusher.news', maxBytes: 10240 })
  const status = await (await fetch(`${s.url}/api/status`, { headers: { authorization: `Bearer ${sign({ sub: 'ops', role: 'service' })}` } })).json() as { pusher: { apps: Array<Record<string, unknown>> } }
  t.match(status.pusher.apps[0], { id: APP.id, bridge: { roomPrefix: 'pusher.', private: true } }, 'the status page shows the bridge')
})

test('two instances on one Redis: native members and Pusher subscribers on different instances see each other\'s events once', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...BRIDGE_ENV, ...redis.env }
  const [s1, s2] = await Promise.all([build(t, env), build(t, env)])
  const ann = await native(t, s1, 'ann', ['pusher.*'])
  await ann.request({ type: 'join', room: 'pusher.news' })
  await ann.request({ type: 'join', room: 'pusher.presence-ops' })
  const p = pusherClient(t, s2.port, { sdk: sdkFor(s2.port), presence: () => ({ user_id: 'pat' }) })
  await connected(p)
  const [news, ops] = await Promise.all([subscribed(p, 'news'), subscribed(p, 'presence-ops')])

  // triggered through instance 2's API: ann on instance 1 gets it once
  await sdkFor(s2.port).trigger('news', 'posted', { n: 1 })
  await ann.waitFor(m => m.type === 'room_message' && m.data?.event === 'posted', 'posted on instance 1')
  // and through instance 1's API (no Pusher subscriber there)
  await sdkFor(s1.port).trigger('news', 'posted', { n: 2 })
  await ann.waitFor(m => m.type === 'room_message' && m.data?.data?.n === 2, 'second posted')
  // published by ann on instance 1: reaches the Pusher subscriber on instance 2
  const reply = once(news, 'reply')
  await ann.request({ type: 'publish', room: 'pusher.news', data: { event: 'reply', data: { from: 'ann' } } })
  t.same(await reply, { from: 'ann' })
  // a presence client event from instance 2 reaches the room on instance 1 with its user_id
  const whisper = ann.waitFor(m => m.type === 'room_message' && m.room === 'pusher.presence-ops', 'client event')
  ops.trigger('client-wave', { hi: 1 })
  t.match(await whisper, { data: { event: 'client-wave', data: { hi: 1 }, user_id: 'pat' } })

  const marker = once(news, 'marker')
  await ann.request({ type: 'publish', room: 'pusher.news', data: { event: 'marker', data: {} } })
  await marker
  t.same(messages(ann, 'pusher.news').map(m => m.data?.event ?? m.data), ['posted', 'posted', 'reply', 'marker'], 'each once, nothing bridged twice')
})
