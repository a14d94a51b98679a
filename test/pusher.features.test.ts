import { test } from 'tap'
import Echo from 'laravel-echo'
import { build, tempDir, waitFor } from './support/helper.js'
import { withoutRunnerHook } from './support/process.js'
import { APP, APP_ENV, RawPusher, connected, receiver, once, pusherClient, sdkFor, subscribed } from './support/pusher-clients.js'

const MASTER_KEY = Buffer.alloc(32, 7).toString('base64')

test('laravel-echo: listen on a public channel, private channels, presence here/joining/leaving, whisper', async t => {
  const s = await build(t, APP_ENV)
  const sdk = sdkFor(s.port)
  const p1 = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 1, user_info: { name: 'Taylor' } }) })
  const p2 = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 2, user_info: { name: 'Jess' } }) })
  const echo1 = new Echo({ broadcaster: 'pusher', client: p1 } as never) as any
  const echo2 = new Echo({ broadcaster: 'pusher', client: p2 } as never) as any
  await Promise.all([connected(p1), connected(p2)])

  const shipped = new Promise(resolve => echo1.channel('orders').listen('OrderShipped', resolve))
  const named = new Promise(resolve => echo1.channel('orders').listen('.order.shipped', resolve))
  const paid = new Promise(resolve => echo1.private('App.Models.User.1').listen('.Illuminate\\Notifications\\Events\\BroadcastNotificationCreated', resolve))
  await waitFor(() => p1.channel('orders')?.subscribed === true && p1.channel('private-App.Models.User.1')?.subscribed === true, 'Echo subscriptions')
  await sdk.trigger('orders', 'App\\Events\\OrderShipped', { id: 7 })
  await sdk.trigger('orders', 'order.shipped', { id: 8 })
  await sdk.trigger('private-App.Models.User.1', 'Illuminate\\Notifications\\Events\\BroadcastNotificationCreated', { type: 'invoice' })
  t.same(await shipped, { id: 7 })
  t.same(await named, { id: 8 })
  t.same(await paid, { type: 'invoice' })

  const here = new Promise<unknown[]>(resolve => echo1.join('chat').here(resolve))
  t.same(await here, [{ name: 'Taylor' }])
  const joining = new Promise(resolve => echo1.join('chat').joining(resolve))
  const here2 = new Promise<unknown[]>(resolve => echo2.join('chat').here(resolve))
  t.same(await joining, { name: 'Jess' })
  t.same((await here2).length, 2)

  // whisper: a client event, relayed to the others (with the sender's user_id), never back to the sender
  const typing = new Promise(resolve => echo1.join('chat').listenForWhisper('typing', resolve))
  const selfGot: unknown[] = []
  echo2.join('chat').listenForWhisper('typing', (e: unknown) => selfGot.push(e))
  echo2.join('chat').whisper('typing', { name: 'Jess' })
  t.same(await typing, { name: 'Jess' })
  const leaving = new Promise(resolve => echo1.join('chat').leaving(resolve))
  echo2.leave('chat')
  t.same(await leaving, { name: 'Jess' })
  t.same(selfGot, [])

  // Echo's error callback: a private channel whose auth the server refuses
  const forged = pusherClient(t, s.port, { extra: { channelAuthorization: { customHandler: (_p: unknown, cb: (e: null, a: unknown) => void) => cb(null, { auth: `${APP.key}:${'f'.repeat(64)}` }) } } })
  const echo3 = new Echo({ broadcaster: 'pusher', client: forged } as never) as any
  const failed = new Promise(resolve => echo3.private('secret').error(resolve))
  t.match(await failed, { status: 401 })
})

test('client events: private and presence only, not on encrypted channels, not echoed, rate-limited per connection with 4301', async t => {
  const dir = (await import('./support/helper.js')).tempDir(t)
  const { writeFileSync } = await import('node:fs')
  const file = `${dir}/apps.json`
  writeFileSync(file, JSON.stringify([{ ...APP, maxClientEventsPerSecond: 3 }]))
  const s = await build(t, { PUSHER_APPS_FILE: file })
  const sdk = sdkFor(s.port, APP, { encryptionMasterKeyBase64: MASTER_KEY })
  const a = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  const b = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'b' }) })
  const aId = await a.established()
  await connected(b)
  for (const ch of ['private-x', 'public-x']) {
    a.send('pusher:subscribe', { channel: ch, auth: ch.startsWith('private-') ? sdk.authorizeChannel(aId, ch).auth : '' })
  }
  await a.next(f => f.event === 'pusher_internal:subscription_succeeded' && f.channel === 'public-x', 'subscribed')
  const bx = await subscribed(b, 'private-x')
  const relayed = once(bx, 'client-hi')
  a.send('client-hi', { n: 1 }, 'private-x')
  t.same(await relayed, { n: 1 })

  a.send('client-hi', {}, 'public-x')
  t.match(await a.next(f => f.event === 'pusher:error', 'public refused'), { data: { message: /only allowed on private- and presence- channels/ } })
  let from = a.frames.length
  a.send('client-hi', {}, 'private-elsewhere')
  t.match(await a.next(f => f.event === 'pusher:error', 'unsubscribed refused', from), { data: { message: /not subscribed/ } })

  // encrypted: ciphertext from the SDK reaches pusher-js, which decrypts it; a client event there is refused
  const enc = await subscribed(b, 'private-encrypted-vault')
  const secret = once(enc, 'opened')
  await sdk.trigger('private-encrypted-vault', 'opened', { code: 42 })
  t.same(await secret, { code: 42 })
  a.send('pusher:subscribe', { channel: 'private-encrypted-vault', auth: sdk.authorizeChannel(aId, 'private-encrypted-vault').auth })
  await a.next(f => f.event === 'pusher_internal:subscription_succeeded' && f.channel === 'private-encrypted-vault', 'subscribed encrypted')
  await sdk.trigger('private-encrypted-vault', 'opened', { code: 43 })
  const cipher = await a.next(f => f.event === 'opened', 'ciphertext')
  t.match(cipher.parsed, { nonce: String, ciphertext: String })
  // random base64 may hold any digits: the check is that no plaintext field is relayed, and the box is the sealed plaintext's size
  t.same(Object.keys(cipher.parsed as object).sort(), ['ciphertext', 'nonce'], 'the server relays ciphertext only')
  t.notMatch(cipher.data, /"code"/, 'no plaintext field in the relayed data')
  t.equal(Buffer.from((cipher.parsed as { ciphertext: string }).ciphertext, 'base64').length, JSON.stringify({ code: 43 }).length + 16, 'the plaintext sealed with a 16-byte tag')
  from = a.frames.length
  a.send('client-hi', {}, 'private-encrypted-vault')
  t.match(await a.next(f => f.event === 'pusher:error', 'encrypted refused', from), { data: { message: /not on private-encrypted- channels/ } })

  // rate: 3 per second; the 4th in the same second is refused with 4301 and the connection stays
  from = a.frames.length
  const got: unknown[] = []
  bx.bind('client-burst', (d: unknown) => got.push(d))
  for (let i = 0; i < 4; i++) a.send('client-burst', { i }, 'private-x')
  t.match(await a.next(f => f.event === 'pusher:error', 'rate limited', from), { data: { code: 4301, message: /at most 3 client events per second/ } })
  t.equal(a.ws.readyState, 1)
  await waitFor(() => got.length >= 1, 'some burst relayed')
  t.ok(got.length <= 3)
})

test('cache channels replay the last event or send pusher:cache_miss; sign-in and server-to-user events', async t => {
  const s = await build(t, APP_ENV)
  const sdk = sdkFor(s.port)
  const a = pusherClient(t, s.port, { sdk, user: { id: 'u1', user_info: { name: 'U' } } as never })
  await connected(a)
  const miss = once(a.subscribe('cache-prices'), 'pusher:cache_miss')
  await miss
  await sdk.trigger('cache-prices', 'price', { eur: 1 })
  const later = pusherClient(t, s.port, { sdk })
  await connected(later)
  const replay = once(later.subscribe('cache-prices'), 'price')
  t.same(await replay, { eur: 1 })

  a.signin()
  const hello = once(a.user as never, 'hello')
  await waitFor(() => s.app.pusher.get(APP.id)!.registry.get('#server-to-user-u1') !== undefined, 'the user channel subscribed')
  await sdk.sendToUser('u1', 'hello', { z: 1 })
  t.same(await hello, { z: 1 })

  // the user channel of someone else is refused; a forged sign-in closes with 4009
  const raw = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  const id = await raw.established()
  raw.send('pusher:subscribe', { channel: '#server-to-user-u1', auth: '' })
  t.match(await raw.next(f => f.event === 'pusher:subscription_error', 'refused'), { data: { status: 403 } })
  raw.send('pusher:signin', { auth: `${APP.key}:${'0'.repeat(64)}`, user_data: JSON.stringify({ id: 'u1' }) })
  t.match(await raw.closed, { code: 4009 })
  t.ok(id)
})

test('webhooks: signed, batched, retried, once per transition, vacated only when the last member left', async t => {
  const hooks = await receiver(t)
  hooks.failNext(1)
  const s = await build(t, { ...APP_ENV, PUSHER_WEBHOOK_URL: hooks.url })
  // retries start at 1 s in production; the first one is the only one this test waits for
  const sdk = sdkFor(s.port)
  const a = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'a' }) })
  const a2 = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'a' }) })
  await Promise.all([connected(a), connected(a2)])
  await subscribed(a, 'presence-hq')
  await subscribed(a2, 'presence-hq')
  await waitFor(() => hooks.batches.length >= 1, 'the first webhook (after one 503 and a retry)', 10000)
  t.same(hooks.events(), ['channel_occupied:presence-hq', 'member_added:presence-hq:a'], 'one occupied and one member_added for two sockets of one user')
  a.unsubscribe('presence-hq')
  const ch = a2.channel('presence-hq')
  ch.trigger('client-wave', { hi: 1 })
  await waitFor(() => hooks.events().includes('client_event:presence-hq:a'), 'client_event')
  t.notOk(hooks.events().includes('channel_vacated:presence-hq'), 'not vacated while a2 is still subscribed')
  a2.unsubscribe('presence-hq')
  await waitFor(() => hooks.events().includes('channel_vacated:presence-hq'), 'vacated')
  t.same(hooks.events().filter(e => e.endsWith('presence-hq:a') || e.includes('vacated')), ['member_added:presence-hq:a', 'client_event:presence-hq:a', 'member_removed:presence-hq:a', 'channel_vacated:presence-hq'])
  t.ok(hooks.batches.every(b => b.valid), 'every request passes the SDK webhook validation (X-Pusher-Key, X-Pusher-Signature, Content-Type)')
  const client = hooks.batches.flatMap(b => b.events).find(e => e.name === 'client_event')
  t.match(client, { event: 'client-wave', data: '{"hi":1}', socket_id: /^\d+\.\d+$/, user_id: 'a' })
})

test('webhook batches not delivered when the server stops are kept in the store and sent after the restart, once', async t => {
  const hooks = await receiver(t)
  hooks.failNext(Infinity)
  const dataDir = tempDir(t)
  const env = { ...APP_ENV, PUSHER_WEBHOOK_URL: hooks.url }
  const first = await build(t, env, { dataDir })
  const raw = await RawPusher.open(t, first.port, `/app/${APP.key}?protocol=7`)
  await raw.established()
  raw.send('pusher:subscribe', { channel: 'kept' })
  await raw.next(f => f.event === 'pusher_internal:subscription_succeeded', 'subscribed')
  await waitFor(() => hooks.refused() > 0, 'a refused delivery of channel_occupied')
  await first.app.close()
  t.equal(hooks.batches.length, 0, 'nothing was accepted before the restart')

  hooks.failNext(0)
  const second = await build(t, env, { dataDir })
  await waitFor(() => hooks.events().includes('channel_occupied:kept'), 'the kept batch, sent again by the restarted server')
  t.equal(hooks.events().filter(e => e === 'channel_occupied:kept').length, 1, 'channel_occupied arrives once')
  t.ok(hooks.events().every(e => e === 'channel_occupied:kept' || e === 'channel_vacated:kept'), 'only what the first run queued')
  t.ok(hooks.batches.every(b => b.valid), 'signed for the SDK as at the first attempt')
  t.ok(second.logs().some(l => l.event === 'webhook.resumed' && l.appId === APP.id), 'the restart says it sent them again')
})

// pusher-js itself is not used here: told 4200 it reconnects at once (its 'retry' close action), to a server that is
// gone in this test, and its connection strategy's timers outlive disconnect() in that state.
test('graceful shutdown: pusher:error 4200 "Server closed. Please reconnect shortly." then the close', async t => {
  const s = await build(t, APP_ENV)
  const raw = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  await raw.established()
  await s.app.close()
  t.match(await raw.closed, { code: 4200, reason: 'Server closed. Please reconnect shortly.' })
  t.match(raw.frames.at(-1), { event: 'pusher:error', data: { code: 4200, message: 'Server closed. Please reconnect shortly.' } })
})

test('examples/pusher/demo.mjs runs against the server: SDK auth endpoint, pusher-js, an event on private and presence', async t => {
  const { execFile } = await import('node:child_process')
  const { promisify } = await import('node:util')
  const { fileURLToPath } = await import('node:url')
  const s = await build(t, APP_ENV)
  const demo = fileURLToPath(new URL('../../examples/pusher/demo.mjs', import.meta.url))
  const { stdout } = await promisify(execFile)(...withoutRunnerHook(process.execPath, [demo]), { env: { ...process.env, SWITCHBOARD_PORT: String(s.port), PUSHER_APP_ID: APP.id, PUSHER_APP_KEY: APP.key, PUSHER_APP_SECRET: APP.secret } })
  t.match(stdout, /presence members: 1 \{"id":"demo-user","info":\{"name":"Demo"\}\}/)
  t.match(stdout, /received: \[\{"id":42\},\{"id":42\}\]/)
})
