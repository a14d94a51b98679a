import { test } from 'tap'
import { build, waitFor } from './support/helper.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'
import { cluster } from './support/cluster-instances.js'
import { APP, APP_ENV, RawPusher, connected, once, pusherClient, receiver, sdkFor, subscribed } from './support/pusher-clients.js'

test('two instances: subscription_count, the channel list, occupied, cache channels and terminate_connections are cluster-wide', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...APP_ENV, ...redis.env }
  const [s1, s2] = await Promise.all([build(t, env), build(t, env)])
  const sdk1 = sdkFor(s1.port)
  const sdk2 = sdkFor(s2.port)
  const [p1, p2, p3] = [pusherClient(t, s1.port, { sdk: sdk1 }), pusherClient(t, s2.port, { sdk: sdk2 }), pusherClient(t, s2.port, { sdk: sdk2 })]
  await Promise.all([connected(p1), connected(p2), connected(p3)])
  await Promise.all([subscribed(p1, 'news'), subscribed(p2, 'news'), subscribed(p3, 'news'), subscribed(p2, 'only-on-two')])

  const list = async (sdk = sdk1) => (await (await sdk.get({ path: '/channels', params: { info: 'subscription_count' } })).json()).channels
  t.same(await list(), { news: { subscription_count: 3 }, 'only-on-two': { subscription_count: 1 } }, 'instance 1 lists the channels of both instances with their counts')
  t.same(await list(sdk2), await list(), 'instance 2 answers the same')

  p1.unsubscribe('news')
  await waitFor(() => s1.app.pusher.get(APP.id)!.registry.get('news') === undefined, 'instance 1 has no news subscriber')
  await waitFor(async () => (await list())?.news?.subscription_count === 2, 'the count went down everywhere', 5000, 100)
  t.same(await (await sdk1.get({ path: '/channels/news', params: { info: 'subscription_count' } })).json(), { occupied: true, subscription_count: 2 }, 'occupied by instance 2\'s subscribers, asked on instance 1')
  p2.unsubscribe('news')
  p3.unsubscribe('news')
  await waitFor(async () => (await (await sdk1.get({ path: '/channels/news' })).json()).occupied === false, 'vacated everywhere', 5000, 100)
  t.same(Object.keys(await list()), ['only-on-two'])

  // a cache channel's last event, triggered through instance 1 with no subscriber anywhere, is replayed by instance 2
  await sdk1.trigger('cache-score', 'goal', { home: 1 })
  const p4 = pusherClient(t, s2.port, { sdk: sdk2 })
  await connected(p4)
  const ch = p4.subscribe('cache-score')
  const misses: unknown[] = []
  ch.bind('pusher:cache_miss', (d: unknown) => misses.push(d))
  t.same(await once(ch, 'goal'), { home: 1 }, 'replayed on subscribe by the other instance')
  t.same(misses, [])
  t.same(await (await sdk2.get({ path: '/channels/cache-score', params: { info: 'cache' } })).json(), { occupied: true, cache: { event: 'goal', data: '{"home":1}' } })

  // terminate_connections asked of instance 1 closes the user's socket on instance 2
  const raw = await RawPusher.open(t, s2.port, `/app/${APP.key}?protocol=7`)
  const socketId = await raw.established()
  const user = sdk2.authenticateUser(socketId, { id: 'u-9' })
  raw.send('pusher:signin', user)
  await raw.next(f => f.event === 'pusher:signin_success', 'signed in')
  await sdk1.terminateUserConnections('u-9')
  t.equal((await raw.closed).code, 4009, 'closed with 4009 on the other instance')
})

test('an instance killed with SIGKILL: once its heartbeat expires, its members are removed and its channels vacated, once, and Redis holds nothing of it', redisTestOptions(), async t => {
  const hooks = await receiver(t)
  const { redis, instances: [a, b] } = await cluster(t, 2, { ...APP_ENV, REDIS_INSTANCE_TTL_MS: '1000', PUSHER_WEBHOOK_URL: hooks.url })
  const ann = pusherClient(t, a.port, { sdk: sdkFor(a.port), presence: () => ({ user_id: 'ann', user_info: { n: 'Ann' } }) })
  const bob = pusherClient(t, b.port, { sdk: sdkFor(b.port), presence: () => ({ user_id: 'bob' }) })
  await Promise.all([connected(ann), connected(bob)])
  await subscribed(ann, 'presence-ops')
  await subscribed(ann, 'news')
  const bobOps = await subscribed(bob, 'presence-ops')
  t.same(Object.keys(bobOps.members!.members).sort(), ['ann', 'bob'])
  await waitFor(() => hooks.events().includes('member_added:presence-ops:bob') && hooks.events().includes('channel_occupied:news'), 'the webhooks of the joins')
  const sdkB = sdkFor(b.port)
  t.same(Object.keys((await (await sdkB.get({ path: '/channels' })).json()).channels).sort(), ['news', 'presence-ops'])

  const serverA = a.logs().find(l => l.event === 'redis.connected')?.serverId as string
  t.ok(serverA, 'instance A\'s server id')
  const removed = once(bobOps, 'pusher:member_removed', 20000)
  a.proc.kill('SIGKILL')
  await a.exited
  t.same(await removed, { id: 'ann', info: { n: 'Ann' } }, 'bob is told that ann (on the dead instance) left')
  await waitFor(() => hooks.events().includes('channel_vacated:news') && hooks.events().includes('member_removed:presence-ops:ann'), 'the webhooks of the sweep', 15000, 100)
  t.same((await (await sdkB.get({ path: '/channels/presence-ops/users' })).json()).users, [{ id: 'bob' }])
  t.same(Object.keys((await (await sdkB.get({ path: '/channels' })).json()).channels), ['presence-ops'])
  t.same(await (await sdkB.get({ path: '/channels/news' })).json(), { occupied: false })

  // nothing of A left in Redis
  const keys = redis.cli('KEYS', 'sb:pusher:*').split('\n').filter(Boolean)
  for (const k of keys) {
    const type = redis.cli('TYPE', k)
    if (type !== 'hash') continue
    const fields = redis.cli('HKEYS', k)
    t.notOk(fields.includes(serverA), `${k} holds no field of the dead instance`)
  }
  // once: a second sweep (the next heartbeats) announces nothing more
  await new Promise(resolve => setTimeout(resolve, 1500))
  t.equal(hooks.events().filter(e => e === 'member_removed:presence-ops:ann').length, 1, 'member_removed once')
  t.equal(hooks.events().filter(e => e === 'channel_vacated:news').length, 1, 'channel_vacated once')
  t.notOk(hooks.events().includes('channel_vacated:presence-ops'), 'presence-ops still has bob')
  t.equal(b.logs().filter(l => l.event === 'pusher.instance_swept').length, 2, 'logged once per channel')
})

test('Redis loses everything (FLUSHALL): each instance writes its Pusher channels and members again with its heartbeat', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  // the heartbeat (every third of the TTL) restores what FLUSHALL took; a TTL a busy machine's event loop can
  // outlast would make Redis expire a live instance, whose entries reads then leave out (as for a dead one)
  const env = { ...APP_ENV, ...redis.env, REDIS_INSTANCE_TTL_MS: '3000' }
  const [s1, s2] = await Promise.all([build(t, env), build(t, env)])
  const ann = pusherClient(t, s1.port, { sdk: sdkFor(s1.port), presence: () => ({ user_id: 'ann', user_info: { n: 1 } }) })
  const bob = pusherClient(t, s2.port, { sdk: sdkFor(s2.port) })
  await Promise.all([connected(ann), connected(bob)])
  await Promise.all([subscribed(ann, 'presence-ops'), subscribed(ann, 'news'), subscribed(bob, 'news')])
  const sdk2 = sdkFor(s2.port)
  const view = async () => ({
    channels: (await (await sdk2.get({ path: '/channels', params: { info: 'subscription_count' } })).json()).channels,
    users: (await (await sdk2.get({ path: '/channels/presence-ops/users' })).json()).users
  })
  const before = await view()
  t.same(before, { channels: { news: { subscription_count: 2 }, 'presence-ops': { subscription_count: 1 } }, users: [{ id: 'ann' }] })
  redis.cli('FLUSHALL')
  t.equal(redis.cli('EXISTS', 'sb:pusher:{app-1:news}:s'), '0', 'gone from Redis')
  await waitFor(async () => JSON.stringify(await view()) === JSON.stringify(before), 'instance 2 sees both instances\' channels and ann again', 10000, 100)
  t.pass('restored by the heartbeats')
  t.equal(s1.logs().filter(l => l.event === 'redis.restored').length >= 1, true, 'instance 1 logged its restore')
})
