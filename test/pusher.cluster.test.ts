import { test } from 'tap'
import { build, waitFor } from './support/helper.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'
import { APP_ENV, connected, once, pusherClient, receiver, sdkFor, subscribed } from './support/pusher-clients.js'

test('two instances on one Redis: HTTP-triggered and client events reach subscribers on the other instance, socket_id exclusion holds', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...APP_ENV, ...redis.env }
  const [s1, s2] = await Promise.all([build(t, env), build(t, env)])
  const sdk1 = sdkFor(s1.port)
  const a = pusherClient(t, s1.port, { sdk: sdk1 })
  const b = pusherClient(t, s2.port, { sdk: sdkFor(s2.port) })
  await Promise.all([connected(a), connected(b)])
  const [aNews, bNews] = await Promise.all([subscribed(a, 'news'), subscribed(b, 'news')])
  const [aPriv, bPriv] = await Promise.all([subscribed(a, 'private-team'), subscribed(b, 'private-team')])

  // triggered on instance 1, excluding a's socket: b on instance 2 gets it, a does not
  const aGot: unknown[] = []
  aNews.bind('posted', (d: unknown) => aGot.push(d))
  const bGot = once(bNews, 'posted')
  await sdk1.trigger('news', 'posted', { n: 1 }, { socket_id: a.connection.socket_id })
  t.same(await bGot, { n: 1 })
  // triggered on instance 2 (its SDK): reaches instance 1
  const aMarker = once(aNews, 'marker')
  await sdkFor(s2.port).trigger('news', 'marker', { m: 1 })
  t.same(await aMarker, { m: 1 })
  t.same(aGot, [], 'the excluded socket on instance 1 got nothing')

  // a client event from instance 1 reaches instance 2, never back to its sender
  const whisper = once(bPriv, 'client-typing')
  const echoed: unknown[] = []
  aPriv.bind('client-typing', (d: unknown) => echoed.push(d))
  aPriv.trigger('client-typing', { who: 'a' })
  t.same(await whisper, { who: 'a' })
  const back = once(aPriv, 'client-done')
  bPriv.trigger('client-done', {})
  await back
  t.same(echoed, [])
})

test('two instances: presence members and webhooks are cluster-wide; occupied, member_added, vacated fire once, never while a member is on the other instance', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const hooks = await receiver(t)
  const env = { ...APP_ENV, ...redis.env, PUSHER_WEBHOOK_URL: hooks.url }
  const [s1, s2] = await Promise.all([build(t, env), build(t, env)])
  const sdk1 = sdkFor(s1.port)
  const sdk2 = sdkFor(s2.port)
  const ann = pusherClient(t, s1.port, { sdk: sdk1, presence: () => ({ user_id: 'ann', user_info: { name: 'Ann' } }) })
  const ann2 = pusherClient(t, s2.port, { sdk: sdk2, presence: () => ({ user_id: 'ann', user_info: { name: 'Ann' } }) })
  const bob = pusherClient(t, s2.port, { sdk: sdk2, presence: () => ({ user_id: 'bob', user_info: { name: 'Bob' } }) })
  await Promise.all([connected(ann), connected(ann2), connected(bob)])

  const annRoom = await subscribed(ann, 'presence-ops')
  const joined = once(annRoom, 'pusher:member_added')
  const bobRoom = await subscribed(bob, 'presence-ops')
  t.same(bobRoom.members!.members, { ann: { name: 'Ann' }, bob: { name: 'Bob' } }, 'bob on instance 2 sees ann of instance 1')
  t.same(await joined, { id: 'bob', info: { name: 'Bob' } }, 'ann on instance 1 is told of bob joining on instance 2')
  // ann's second socket, on the other instance: no second member_added anywhere
  await subscribed(ann2, 'presence-ops')
  t.same(((await (await sdk1.get({ path: '/channels/presence-ops/users' })).json()).users as Array<{ id: string }>).map(u => u.id).sort(), ['ann', 'bob'])
  t.same(await (await sdk2.get({ path: '/channels/presence-ops', params: { info: 'user_count' } })).json(), { occupied: true, user_count: 2 })

  // ann leaves instance 1 but is still on instance 2: no member_removed, no vacated
  ann.unsubscribe('presence-ops')
  bob.unsubscribe('presence-ops')
  await waitFor(() => s1.app.pusher.get(APP_ENV.PUSHER_APP_ID)!.registry.get('presence-ops') === undefined, 'instance 1 has no subscriber left')
  await waitFor(() => hooks.events().includes('member_removed:presence-ops:bob'), 'bob removed')
  t.notOk(hooks.events().includes('member_removed:presence-ops:ann'), 'ann still has a socket on instance 2')
  t.notOk(hooks.events().includes('channel_vacated:presence-ops'), 'not vacated while ann2 is subscribed on instance 2')
  // (a vacated wrongly fired by instance 1 would also show as a second channel_vacated in the final list)
  ann2.unsubscribe('presence-ops')
  await waitFor(() => hooks.events().includes('channel_vacated:presence-ops'), 'vacated')
  await waitFor(() => hooks.events().includes('member_removed:presence-ops:ann'), 'ann removed')
  t.same(hooks.events().filter(e => e.includes('presence-ops')).sort(), [
    'channel_occupied:presence-ops',
    'channel_vacated:presence-ops',
    'member_added:presence-ops:ann',
    'member_added:presence-ops:bob',
    'member_removed:presence-ops:ann',
    'member_removed:presence-ops:bob'
  ], 'each event once across both instances')
  t.ok(hooks.batches.every(b => b.valid))
})

test('two instances: an event sent to a user right after signin_success reaches its signed-in sockets on the other instance', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...APP_ENV, ...redis.env }
  const [s1, s2] = await Promise.all([build(t, env), build(t, env)])
  const sdk1 = sdkFor(s1.port)
  const a = pusherClient(t, s2.port, { sdk: sdkFor(s2.port), user: { id: 'ann' } })
  await connected(a)
  const got = once(a.user as never, 'hello')
  a.signin()
  await a.user.signinDonePromise
  // triggered on instance 1, where ann has no socket: instance 2 listens for ann since her sign-in
  await sdk1.sendToUser('ann', 'hello', { from: 1 })
  t.same(await got, { from: 1 })
})
