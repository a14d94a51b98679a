// Per-app settings of the Pusher protocol (PUSHER_APPS_FILE, with the field names Soketi's app managers use),
// each checked with the real pusher-js and the real `pusher` server SDK against a listening server.
import { test } from 'tap'
import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { build, tempDir, waitFor, type TestContext } from './support/helper.js'
import { APP, RawPusher, connected, holdFayeSocket, once, pusherClient, receiver, refusal, sdkFor } from './support/pusher-clients.js'

const require = createRequire(import.meta.url)
/** The SDK's own user signature (authenticateUser without its string-id check: PHP and Laravel sign numeric ids). */
const { getSocketSignatureForUser } = require('pusher/lib/auth') as { getSocketSignatureForUser (token: unknown, socketId: string, userData: unknown): { auth: string, user_data: string } }

/** A server whose one app is APP with `settings` (an entry of PUSHER_APPS_FILE). */
async function serve (t: TestContext, settings: Record<string, unknown> = {}, env: Record<string, string> = {}) {
  const file = `${tempDir(t)}/apps.json`
  writeFileSync(file, JSON.stringify({ apps: [{ ...APP, ...settings }] }))
  return await build(t, { PUSHER_APPS_FILE: file, ...env })
}

test('user authentication: an event sent to the user right after signin_success reaches every signed-in socket, subscribed to #server-to-user- or not', async t => {
  const s = await serve(t)
  const sdk = sdkFor(s.port)
  const a = pusherClient(t, s.port, { sdk, user: { id: 'ann' } })
  const b = pusherClient(t, s.port, { sdk, user: { id: 'ann' } })
  await Promise.all([connected(a), connected(b)])
  const gotA = once(a.user as never, 'hello')
  const gotB = once(b.user as never, 'hello')
  a.signin()
  b.signin()
  await a.user.signinDonePromise
  await b.user.signinDonePromise
  // at once: pusher-js has only just sent its subscription to #server-to-user-ann
  await sdk.sendToUser('ann', 'hello', { n: 1 })
  t.same(await gotA, { n: 1 })
  t.same(await gotB, { n: 1 })

  // a raw socket signed in and never subscribed gets it once; so does the one that subscribed, once too
  const raw = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  const id = await raw.established()
  raw.send('pusher:signin', getSocketSignatureForUser((sdk as unknown as { config: { token: unknown } }).config.token, id, { id: 'ann' }))
  await raw.next(f => f.event === 'pusher:signin_success', 'signin_success')
  const from = raw.frames.length
  await sdk.sendToUser('ann', 'again', { n: 2 })
  t.match(await raw.next(f => f.event === 'again', 'the user event', from), { channel: '#server-to-user-ann', parsed: { n: 2 } })
  await sdk.sendToUser('ann', 'third', { n: 3 })
  await raw.next(f => f.event === 'third', 'a later event', from)
  t.equal(raw.frames.slice(from).filter(f => f.event === 'again').length, 1, 'delivered once')
})

test('user authentication: user_data with a numeric id signs in, and events to the user reach it', async t => {
  const s = await serve(t)
  const sdk = sdkFor(s.port)
  const raw = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  const id = await raw.established()
  const signed = getSocketSignatureForUser((sdk as unknown as { config: { token: unknown } }).config.token, id, { id: 1, user_info: { name: 'Taylor' } })
  t.equal(signed.user_data, '{"id":1,"user_info":{"name":"Taylor"}}')
  raw.send('pusher:signin', signed)
  t.match(await raw.next(f => f.event === 'pusher:signin_success', 'signin_success'), { parsed: { user_data: signed.user_data } })
  await sdk.sendToUser('1', 'notify', { ok: true })
  t.match(await raw.next(f => f.event === 'notify', 'the event to user 1'), { channel: '#server-to-user-1', parsed: { ok: true } })
  // terminate_connections finds the user by the same id
  await sdk.terminateUserConnections('1')
  t.match(await raw.closed, { code: 4009 })
})

test('enableUserAuthentication: a connection that does not sign in within userAuthenticationTimeout is closed with 4009; signing in or a private subscription keeps it', async t => {
  // a deadline a loaded machine meets for a local sign-in; the silent socket is opened after the others, so its close proves theirs passed
  const s = await serve(t, { enableUserAuthentication: true, userAuthenticationTimeout: 3000 })
  const sdk = sdkFor(s.port)
  const signedIn = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  const private_ = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  const id1 = await signedIn.established()
  const id2 = await private_.established()
  signedIn.send('pusher:signin', sdk.authenticateUser(id1, { id: 'u' }))
  private_.send('pusher:subscribe', { channel: 'private-x', auth: sdk.authorizeChannel(id2, 'private-x').auth })
  // pusher-js: signin() right after connecting keeps the connection; without it, it is closed and stays closed
  const c = pusherClient(t, s.port, { sdk, user: { id: 'js' } })
  c.signin()
  await signedIn.next(f => f.event === 'pusher:signin_success', 'signed in')
  await private_.next(f => f.event === 'pusher_internal:subscription_succeeded', 'subscribed')
  await c.user.signinDonePromise
  const d = pusherClient(t, s.port, { sdk })
  const dGone = once(d.connection, 'disconnected')
  await connected(d)
  const release = holdFayeSocket(d)
  const idle = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  await idle.established()
  t.match(await idle.closed, { code: 4009 }, 'a silent connection is closed with 4009')
  t.match(idle.frames.at(-1), { event: 'pusher:error', data: { code: 4009, message: /within 3000 ms \(userAuthenticationTimeout\)/ } })
  await dGone
  release()
  // both were open past the deadline: a frame after it is still answered
  signedIn.send('pusher:ping', {})
  private_.send('pusher:ping', {})
  await signedIn.next(f => f.event === 'pusher:pong', 'pong')
  await private_.next(f => f.event === 'pusher:pong', 'pong')
  t.equal(signedIn.ws.readyState, 1)
  t.equal(private_.ws.readyState, 1)
  t.equal(c.connection.state, 'connected', 'pusher-js signed in: still connected')
  t.not(d.connection.state, 'connected', 'pusher-js without signin: closed, not reconnected')
})

test('channel names: at most 164 characters by default (Pusher\'s limit): pusher-js gets a 164-character channel, and subscription_error for 165; the HTTP API refuses 165', async t => {
  const s = await serve(t)
  const sdk = sdkFor(s.port)
  const c = pusherClient(t, s.port, { sdk })
  await connected(c)
  const ok = c.subscribe('c'.repeat(164))
  await once(ok, 'pusher:subscription_succeeded')
  const long = c.subscribe('c'.repeat(165))
  t.match(await once(long, 'pusher:subscription_error'), { type: 'LimitReached', status: 4009, error: /longer than the allowed 164 characters/ })
  const got = once(ok, 'news')
  await sdk.trigger('c'.repeat(164), 'news', { n: 1 })
  t.same(await got, { n: 1 })
  t.match(await refusal(sdk.trigger('c'.repeat(165), 'news', {})), { status: 400, body: /channels\[0\]: the channel name is longer than the allowed 164 characters \(maxChannelNameLength; got 165\)/ })
  // the signed-in user's channel is bounded by the user id instead
  t.equal((await sdk.sendToUser('u'.repeat(128), 'e', {})).status, 200)
})

test('per-app limits under Soketi\'s names: event name, data size, channels per trigger, batch size, presence member size, channel name, request body', async t => {
  const s = await serve(t, {
    maxEventNameLength: 12,
    maxEventPayloadInKb: 1,
    maxEventChannelsAtOnce: 2,
    maxEventBatchSize: 2,
    maxPresenceMemberSizeInKb: 0.05,
    maxChannelNameLength: 20,
    maxRequestBodyBytes: 1500
  })
  const sdk = sdkFor(s.port)
  const e12 = 'e'.repeat(12)
  t.equal((await sdk.trigger(['a', 'b'], e12, 'x'.repeat(1000))).status, 200, 'at the limits')
  t.match(await refusal(sdk.trigger('a', 'e'.repeat(13), {})), { status: 400, body: /name: must be a string of 1 to 12 characters \(maxEventNameLength\)/ })
  t.match(await refusal(sdk.trigger('a', 'e', 'x'.repeat(1025))), { status: 413, body: /data: at most 1024 bytes \(maxEventPayloadBytes; got 1025\)/ })
  t.match(await refusal(sdk.trigger(['a', 'b', 'c'], 'e', {})), { status: 400, body: /channels: at most 2 channels per event \(maxEventChannelsAtOnce; got 3\)/ })
  t.match(await refusal(sdk.triggerBatch([{ channel: 'a', name: 'e', data: '1' }, { channel: 'a', name: 'e', data: '2' }, { channel: 'a', name: 'e', data: '3' }])), { status: 400, body: /batch: at most 2 events \(maxEventBatchSize; got 3\)/ })
  t.match(await refusal(sdk.triggerBatch([{ channel: 'a', name: 'e', data: 'x'.repeat(1000) }, { channel: 'a', name: 'e', data: 'y'.repeat(1000) }])), { status: 413, body: /body: at most 1500 bytes \(maxRequestBodyBytes/ })
  t.match(await refusal(sdk.trigger('c'.repeat(21), 'e', {})), { status: 400, body: /longer than the allowed 20 characters/ })

  // over the WebSocket: presence member info (56 bytes > 0.05 KB = 51 bytes), channel name, client event name and data
  const big = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'big', user_info: { name: 'n'.repeat(45) } }) })
  const small = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'small', user_info: { n: 1 } }) })
  await Promise.all([connected(big), connected(small)])
  t.match(await once(big.subscribe('presence-room'), 'pusher:subscription_error'), { status: 400, error: /user_info: at most 51 bytes of JSON \(maxPresenceMemberBytes\)/ })
  const room = small.subscribe('presence-room')
  await once(room, 'pusher:subscription_succeeded')
  t.match(await once(small.subscribe('c'.repeat(21)), 'pusher:subscription_error'), { type: 'LimitReached', status: 4009 })
  const raw = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  const id = await raw.established()
  raw.send('pusher:subscribe', { channel: 'private-x', auth: sdk.authorizeChannel(id, 'private-x').auth })
  await raw.next(f => f.event === 'pusher_internal:subscription_succeeded', 'subscribed')
  raw.send('client-' + 'n'.repeat(6), {}, 'private-x')
  t.match(await raw.next(f => f.event === 'pusher:error', 'name refused'), { channel: 'private-x', data: { code: 4300, message: /longer than the allowed 12 characters \(maxEventNameLength\)/ } }, 'a refused client event names its channel and a numeric code')
  const from = raw.frames.length
  raw.send('client-ok', 'x'.repeat(1025), 'private-x')
  t.match(await raw.next(f => f.event === 'pusher:error', 'data refused', from), { data: { code: 4300, message: /data: at most 1024 bytes/ } })
  t.equal(raw.ws.readyState, 1, 'the connection stays')
})

test('Soketi apps files carry over: PascalCase and snake_case spellings, and errors name the field as written', async t => {
  const { parseApp } = await import('../plugins/pusher/apps.js')
  const app = parseApp('t', { ...APP, max_event_payload_in_kb: 2, MaxEventBatchSize: 5, max_presence_members_per_channel: 7, enable_user_authentication: true })
  t.equal(app.maxEventPayloadBytes, 2048)
  t.equal(app.maxEventBatchSize, 5)
  t.equal(app.maxPresenceMembers, 7)
  t.equal(app.enableUserAuthentication, true)
  t.same([app.maxChannelNameLength, app.maxEventNameLength, app.maxEventChannelsAtOnce, app.maxPresenceMemberBytes, app.maxEventPayloadBytes === 2048], [164, 200, 100, 1024, true], 'Pusher\'s defaults for the others')
  const unlimited = parseApp('t', { ...APP, maxConnections: -1, MaxClientEventsPerSecond: -1 })
  t.same([unlimited.maxConnections, unlimited.maxClientEventsPerSecond], [Infinity, Infinity], 'Soketi\'s -1: no limit')
  t.throws(() => parseApp('PUSHER_APPS_FILE apps[0]', { ...APP, max_event_batch_size: 0 }), /apps\[0\]: max_event_batch_size must be an integer >= 1 \(got 0\)/)
  t.throws(() => parseApp('PUSHER_APPS_FILE apps[0]', { ...APP, maxEventPayloadInKb: 'big' }), /maxEventPayloadInKb must be a number of kilobytes > 0/)
})

test('per-app switches: a disabled app refuses connections with 4003 (an unknown key is 4001); enableClientMessages: false refuses client events with 4009', async t => {
  const file = `${tempDir(t)}/apps.json`
  const off = { id: 'off', key: 'off-key', secret: 'off-secret', enabled: false }
  writeFileSync(file, JSON.stringify({ apps: [{ ...APP, enable_client_messages: false }, off] }))
  const s = await build(t, { PUSHER_APPS_FILE: file })

  const disabled = await RawPusher.open(t, s.port, `/app/${off.key}?protocol=7`)
  t.match(await disabled.closed, { code: 4003 })
  t.match(disabled.frames, [{ event: 'pusher:error', data: { code: 4003, message: 'The app is not enabled.' } }])
  const unknown = await RawPusher.open(t, s.port, '/app/nobody?protocol=7')
  t.match(await unknown.closed, { code: 4001 })
  // pusher-js is told, and does not reconnect (4000-4099)
  const js = pusherClient(t, s.port, { key: off.key })
  const states: string[] = []
  js.connection.bind('state_change', ({ current }: { current: string }) => states.push(current))
  await waitFor(() => states.includes('disconnected') || states.includes('failed'), 'pusher-js to give up')
  t.notOk(states.includes('connected'), `pusher-js never connected (${states.join(' → ')})`)

  const sdk = sdkFor(s.port)
  const a = pusherClient(t, s.port, { sdk })
  const b = pusherClient(t, s.port, { sdk })
  await Promise.all([connected(a), connected(b)])
  const [ax, bx] = [a.subscribe('private-x'), b.subscribe('private-x')]
  await Promise.all([once(ax, 'pusher:subscription_succeeded'), once(bx, 'pusher:subscription_succeeded')])
  const got: unknown[] = []
  bx.bind('client-typing', (d: unknown) => got.push(d))
  const refused = once(a.connection, 'error')
  ax.trigger('client-typing', { who: 'a' })
  t.match(await refused, { type: 'PusherError', data: { code: 4009, message: /client events are not enabled for this app/ } })
  // an event triggered after it arrives; the client event never did
  const marker = once(bx, 'marker')
  await sdk.trigger('private-x', 'marker', {})
  await marker
  t.same(got, [])
  t.equal(a.connection.state, 'connected')
})

test('webhooks per URL (Soketi\'s format): event_types, a channel-name prefix or suffix filter, custom headers; webhookBatchMs 0 sends each event alone', async t => {
  const occupied = await receiver(t)
  const team = await receiver(t)
  const hooks = await receiver(t)
  const s = await serve(t, {
    webhookBatchMs: 0,
    webhooks: [
      { url: occupied.url, event_types: ['channel_occupied'] },
      { url: team.url, event_types: ['member_added', 'member_removed'], filter: { channel_name_starts_with: 'presence-team' } },
      { url: hooks.url, headers: { 'X-Api-Token': 'tok-123' }, filter: { channel_name_ends_with: '-hooks' } }
    ]
  })
  const sdk = sdkFor(s.port)
  const c = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'ann' }) })
  await connected(c)
  for (const ch of ['news', 'presence-team-1', 'presence-other', 'x-hooks']) await once(c.subscribe(ch), 'pusher:subscription_succeeded')
  await waitFor(() => occupied.events().length === 4 && team.events().length === 1 && hooks.events().length === 1, 'each URL to get its events')
  t.same(occupied.events().sort(), ['channel_occupied:news', 'channel_occupied:presence-other', 'channel_occupied:presence-team-1', 'channel_occupied:x-hooks'])
  t.same(team.events(), ['member_added:presence-team-1:ann'], 'member events of presence-team* only')
  t.same(hooks.events(), ['channel_occupied:x-hooks'])
  t.ok(occupied.batches.every(b => b.events.length === 1), 'one event per request')
  t.equal(hooks.batches[0].headers['x-api-token'], 'tok-123', 'the custom header is sent')
  t.ok([occupied, team, hooks].every(r => r.batches.every(b => b.valid)), 'signed: the SDK validates every request')

  c.unsubscribe('presence-team-1')
  await waitFor(() => team.events().length === 2, 'member_removed')
  c.unsubscribe('x-hooks')
  await waitFor(() => hooks.events().length === 2, 'vacated')
  t.same(team.events(), ['member_added:presence-team-1:ann', 'member_removed:presence-team-1:ann'])
  t.same(hooks.events(), ['channel_occupied:x-hooks', 'channel_vacated:x-hooks'])
  t.equal(occupied.events().length, 4, 'no vacated to the channel_occupied URL')
})

test('webhooks batched per URL: events of one window go in one request, each URL with only the events it asked for', async t => {
  const all = await receiver(t)
  const members = await receiver(t)
  const s = await serve(t, { webhookBatchMs: 100, webhooks: [all.url, { url: members.url, event_types: ['member_added'] }] })
  const c = pusherClient(t, s.port, { sdk: sdkFor(s.port), presence: () => ({ user_id: 'bo' }) })
  await connected(c)
  await once(c.subscribe('presence-z'), 'pusher:subscription_succeeded')
  await waitFor(() => all.events().length === 2 && members.events().length === 1, 'the batches')
  t.same(all.batches.map(b => b.events.map(e => e.name)), [['channel_occupied', 'member_added']], 'one request with both events')
  t.same(members.batches.map(b => b.events.map(e => e.name)), [['member_added']])
})

test('webhook settings are checked at start-up, naming the field', async t => {
  const { parseApp } = await import('../plugins/pusher/apps.js')
  const where = 'PUSHER_APPS_FILE apps[0]'
  t.throws(() => parseApp(where, { ...APP, webhooks: [{ url: 'ftp://x' }] }), /apps\[0\]: webhooks\[0\]\.url must be an http:\/\/ or https:\/\/ URL/)
  t.throws(() => parseApp(where, { ...APP, webhooks: [{ url: 'http://x', event_types: ['channel_created'] }] }), /webhooks\[0\]\.event_types must be a non-empty list of channel_occupied, channel_vacated/)
  t.throws(() => parseApp(where, { ...APP, webhooks: ['http://x', { url: 'http://y', headers: { 'X-Pusher-Signature': 'forged' } }] }), /webhooks\[1\]\.headers\.X-Pusher-Signature must be absent/)
  let message = ''
  try { parseApp(where, { ...APP, webhooks: [{ url: 'http://x', headers: { 'X-Token': 'secret\r\nEvil: 1' } }] }) } catch (err) { message = (err as Error).message }
  t.match(message, /headers\.X-Token must be a string of at most 4096 characters without CR, LF or NUL/)
  t.notMatch(message, /secret/, 'a header value is never echoed')
  t.throws(() => parseApp(where, { ...APP, webhooks: [{ lambda_function: 'f', event_types: ['client_event'] }] }), /Lambda webhooks are not supported/)
  t.throws(() => parseApp(where, { ...APP, webhookBatchMs: -1 }), /webhookBatchMs must be an integer >= 0/)
})
