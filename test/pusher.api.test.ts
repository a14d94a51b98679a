import { test } from 'tap'
import { build } from './support/helper.js'
import { APP, APP_ENV, connected, holdFayeSocket, once, pusherClient, refusal, sdkFor, subscribed, type PusherChannel } from './support/pusher-clients.js'

test('HTTP API through the real SDK: events with socket_id exclusion and info, batches, channel queries, users, terminate_connections', async t => {
  const s = await build(t, APP_ENV)
  const sdk = sdkFor(s.port)
  const a = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'a', user_info: { n: 1 } }), user: { id: 'a' } })
  const b = pusherClient(t, s.port, { sdk, presence: () => ({ user_id: 'b' }) })
  await Promise.all([connected(a), connected(b)])
  const [aPub, bPub] = await Promise.all([subscribed(a, 'news'), subscribed(b, 'news')])
  await Promise.all([subscribed(a, 'presence-team'), subscribed(b, 'presence-team')])

  // socket_id: the sender's own connection does not get it, the other one does
  const aGot: unknown[] = []
  aPub.bind('posted', (d: unknown) => aGot.push(d))
  const bGot = once(bPub, 'posted')
  const res = await sdk.trigger(['news', 'presence-team'], 'posted', { n: 1 }, { socket_id: a.connection.socket_id, info: 'user_count,subscription_count' })
  t.equal(res.status, 200)
  t.same(await res.json(), { channels: { news: { subscription_count: 2 }, 'presence-team': { user_count: 2, subscription_count: 2 } } })
  t.same(await bGot, { n: 1 })
  // a marker after it: once b has the marker, a would have had `posted` had it been sent
  const aMarker = once(aPub, 'marker')
  await sdk.trigger('news', 'marker', {})
  await aMarker
  t.same(aGot, [], 'the excluded socket did not get the event')

  const batchGot = Promise.all([once(bPub, 'e1'), once(bPub, 'e2')])
  const batch = await sdk.triggerBatch([{ channel: 'news', name: 'e1', data: { y: 1 } }, { channel: 'news', name: 'e2', data: 'raw', info: 'subscription_count' } as never])
  t.same(await batch.json(), { batch: [{}, { subscription_count: 2 }] })
  t.same(await batchGot, [{ y: 1 }, 'raw'])

  t.same(await (await sdk.get({ path: '/channels' })).json(), { channels: { news: {}, 'presence-team': {} } })
  t.same(await (await sdk.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json(), { channels: { 'presence-team': { user_count: 2 } } })
  t.same(await (await sdk.get({ path: '/channels/presence-team', params: { info: 'user_count,subscription_count' } })).json(), { occupied: true, user_count: 2, subscription_count: 2 })
  t.same(await (await sdk.get({ path: '/channels/empty' })).json(), { occupied: false })
  t.same(((await (await sdk.get({ path: '/channels/presence-team/users' })).json()).users as Array<{ id: string }>).map(u => u.id).sort(), ['a', 'b'])

  // errors as Pusher answers them: status and a message naming the field
  t.match(await refusal(sdk.get({ path: '/channels', params: { info: 'user_count' } })), { status: 400, body: /user_count is only available with filter_by_prefix=presence-/ })
  t.match(await refusal(sdk.get({ path: '/channels/news/users' })), { status: 400, body: /presence- channels/ })
  t.match(await refusal(post(sdk, '/events', { name: 'x', data: 'y', channels: Array.from({ length: 101 }, (_, i) => `c${i}`) })), { status: 400, body: /at most 100 channels per event \(maxEventChannelsAtOnce; got 101\)/ })
  t.match(await refusal(post(sdk, '/events', { name: 'x', data: 'y'.repeat(10241), channels: ['news'] })), { status: 413, body: /data: at most 10240 bytes/ })
  t.match(await refusal(post(sdk, '/events', { name: 'pusher:x', data: 'y', channels: ['news'] })), { status: 400, body: /reserved/ })
  t.match(await refusal(post(sdk, '/batch_events', { batch: Array.from({ length: 11 }, () => ({ name: 'x', data: 'y', channel: 'news' })) })), { status: 400, body: /at most 10 events/ })
  t.match(await refusal(sdkFor(s.port, { ...APP, secret: 'wrong' }).trigger('news', 'x', {})), { status: 401, body: /Invalid signature/ })
  t.match(await refusal(sdkFor(s.port, { ...APP, key: 'other' }).trigger('news', 'x', {})), { status: 401, body: /auth_key/ })
  t.match(await refusal(sdkFor(s.port, { ...APP, id: 'nope' }).trigger('news', 'x', {})), { status: 404, body: /Unknown app id/ })
  // a replayed request from 11 minutes ago
  const old = Math.floor(Date.now() / 1000) - 660
  const { sign, md5 } = await import('../plugins/pusher/signatures.js')
  const body = '{"name":"x","data":"y","channels":["news"]}'
  const params = `auth_key=${APP.key}&auth_timestamp=${old}&auth_version=1.0&body_md5=${md5(body)}`
  const sig = sign(APP.secret, `POST\n/apps/${APP.id}/events\n${params}`)
  const replay = await fetch(`${s.url}/apps/${APP.id}/events?${params}&auth_signature=${sig}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  t.equal(replay.status, 401)
  t.match(await replay.text(), /Timestamp expired/)

  // terminate_connections: every socket signed in as `a` gets 4009 and pusher-js does not come back
  a.signin()
  await waitSignedIn(s.app.pusher.get(APP.id)!.registry, 'a')
  const release = holdFayeSocket(a)
  const closed = once(a.connection, 'disconnected')
  t.equal((await sdk.terminateUserConnections('a')).status, 200)
  await closed
  release()
  const left = await waitMembers(sdk, 'presence-team', 1)
  t.same(left, ['b'])
  t.equal(a.connection.state, 'disconnected')
})

/** sdk.post JSON-encodes its body (its .d.ts says string). */
function post (sdk: ReturnType<typeof sdkFor>, path: string, body: object) {
  return sdk.post({ path, body: body as unknown as string })
}

async function waitSignedIn (registry: { socketsOf (id: string): unknown[] }, id: string): Promise<void> {
  const { waitFor } = await import('./support/helper.js')
  await waitFor(() => registry.socketsOf(id).length > 0, `${id} signed in`)
}

async function waitMembers (sdk: ReturnType<typeof sdkFor>, channel: string, n: number): Promise<string[]> {
  const { waitFor } = await import('./support/helper.js')
  let ids: string[] = []
  await waitFor(async () => {
    ids = ((await (await sdk.get({ path: `/channels/${channel}/users` })).json()).users as Array<{ id: string }>).map(u => u.id)
    return ids.length === n
  }, `${n} members`, 5000, 100)
  return ids
}

export type { PusherChannel }
