import t from 'tap'
import { build, requestJson, waitFor, type Built, type TestContext } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'
import { APP, APP_ENV, connected, pusherClient, sdkFor, subscribed } from './support/pusher-clients.js'
import { converged, synced, yEditor } from './support/yjs-editors.js'

async function connect (t: TestContext, wsUrl: string, clientId: string): Promise<TestClient> {
  const client = await TestClient.connect(wsUrl, { clientId })
  t.teardown(() => client.close())
  return client
}

const LIMIT = 6

t.test('two deployments with different REDIS_KEY_PREFIX on one Redis see nothing of each other', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = (prefix: string) => ({ ...APP_ENV, REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, RATE_LIMIT_MAX: '1000', MAX_CONNECTIONS_PER_CLIENT: String(LIMIT) })
  const deployments: Record<'alpha' | 'beta', { prefix: string, one: Built, two: Built }> = {
    alpha: { prefix: 'alpha:', one: await build(t, env('alpha:')), two: await build(t, env('alpha:')) },
    beta: { prefix: 'beta.v2:', one: await build(t, env('beta.v2:')), two: await build(t, env('beta.v2:')) }
  }
  const { alpha, beta } = deployments

  // the same room name and the same client ids in both deployments, each across its two instances
  const a1 = await connect(t, alpha.one.wsUrl, 'ann')
  const a2 = await connect(t, alpha.two.wsUrl, 'dave')
  const b1 = await connect(t, beta.one.wsUrl, 'bea')
  const b2 = await connect(t, beta.two.wsUrl, 'dave')

  t.match(await a1.request({ type: 'join', room: 'lobby' }), { type: 'joined', members: ['ann'], offset: 0 })
  t.match(await b1.request({ type: 'join', room: 'lobby' }), { type: 'joined', members: ['bea'], offset: 0 }, 'beta\'s lobby is empty and new: no alpha member, no alpha offset')
  const aj = await a2.request({ type: 'join', room: 'lobby' })
  t.same(aj.members.sort(), ['ann', 'dave'], 'alpha\'s second instance sees alpha\'s member only')
  const bj = await b2.request({ type: 'join', room: 'lobby' })
  t.same(bj.members.sort(), ['bea', 'dave'], 'beta\'s second instance sees beta\'s member only')
  await a1.next('presence')
  await b1.next('presence')

  t.match(await a1.request({ type: 'publish', room: 'lobby', data: 'alpha-1' }), { type: 'ack', offset: 1 })
  t.match(await b1.request({ type: 'publish', room: 'lobby', data: 'beta-1' }), { type: 'ack', offset: 1 }, 'offsets are per deployment')
  t.match(await a2.next('room_message'), { offset: 1, data: 'alpha-1' }, 'alpha crosses its own instances')
  t.match(await b2.next('room_message'), { offset: 1, data: 'beta-1' }, 'beta crosses its own instances')
  t.match(await a1.request({ type: 'update', room: 'lobby', patch: { owner: 'alpha' } }), { type: 'ack', version: 1 })
  t.match(await a2.next('state'), { version: 1, patch: { owner: 'alpha' } })

  // a direct message to `dave` reaches alpha's dave only; beta's dave gets beta's
  t.match(await a1.request({ type: 'send', to: 'dave', text: 'from alpha' }), { type: 'ack', delivered: 1, queued: false })
  t.match(await b1.request({ type: 'send', to: 'dave', text: 'from beta' }), { type: 'ack', delivered: 1, queued: false })
  t.match(await a2.next('message'), { from: 'ann', text: 'from alpha' })
  t.match(await b2.next('message'), { from: 'bea', text: 'from beta' })
  // a client connected only in alpha is offline for beta: queued in beta's inbox, not delivered to alpha's
  t.match(await b1.request({ type: 'send', to: 'ann', text: 'beta to its ann' }), { type: 'ack', delivered: 0, queued: true })

  // room listing, room view, history and state per deployment
  t.same((await requestJson(`${alpha.two.url}/api/rooms/lobby`)).body.state, { owner: 'alpha' })
  t.same((await requestJson(`${beta.two.url}/api/rooms/lobby`)).body.state, {}, 'alpha\'s state is not beta\'s')
  t.same((await requestJson(`${beta.two.url}/api/rooms/lobby`)).body.members.sort(), ['bea', 'dave'])
  await requestJson(`${beta.one.url}/api/rooms/only-beta/publish`, 'POST', { data: 'x' })
  const listed = async (b: Built) => (await requestJson(`${b.url}/api/rooms`)).body.rooms.map((r: { room: string }) => r.room).sort()
  t.same(await listed(alpha.one), ['lobby'], 'alpha lists its rooms only')
  t.same(await listed(beta.two), ['lobby', 'only-beta'], 'beta lists its rooms only')

  // Pusher: a cache channel and a subscription in alpha do not exist for beta
  const sdkA = sdkFor(alpha.one.port)
  const sdkB = sdkFor(beta.one.port)
  const pa = pusherClient(t, alpha.two.port, { sdk: sdkA })
  await connected(pa)
  await subscribed(pa, 'news')
  await sdkA.trigger('cache-score', 'goal', { home: 1 })
  const channels = async (sdk: typeof sdkA) => (await (await sdk.get({ path: '/channels', params: { info: 'subscription_count' } })).json()).channels
  await waitFor(async () => (await channels(sdkA))?.news?.subscription_count === 1, 'alpha to list its Pusher channel', 5000, 50)
  t.same(await channels(sdkB), {}, 'beta lists no Pusher channel')
  t.same(await (await sdkB.get({ path: '/channels/cache-score', params: { info: 'cache' } })).json(), { occupied: false }, 'beta has no cached event')
  t.match(await (await sdkA.get({ path: '/channels/cache-score', params: { info: 'cache' } })).json(), { cache: { event: 'goal' } })

  // Yjs: the same document name in both deployments holds different content
  const [ya, yb] = [yEditor(t, alpha.one.url, 'shared/doc'), yEditor(t, beta.one.url, 'shared/doc')]
  await synced(ya)
  await synced(yb)
  ya.text.insert(0, 'alpha text')
  const ya2 = yEditor(t, alpha.two.url, 'shared/doc')
  await synced(ya2)
  await converged([ya, ya2], 'alpha\'s editors to converge across its instances')
  const yb2 = yEditor(t, beta.two.url, 'shared/doc')
  await synced(yb2)
  t.equal(yb2.text.toString(), '', 'beta\'s document of the same name is empty')
  yb.text.insert(0, 'beta text')
  await converged([yb, yb2], 'beta\'s editors to converge across its instances')
  t.equal(yb2.text.toString(), 'beta text')
  t.equal(ya2.text.toString(), 'alpha text', 'alpha\'s document did not get beta\'s edit')

  // per-client slots: each deployment counts its own (every connection here comes from 127.0.0.1)
  const slots = (prefix: string) => redis.cli('HVALS', `${prefix}slots:127.0.0.1`).split('\n').filter(Boolean).reduce((n, v) => n + Number(v), 0)
  const held = { alpha: 2, beta: 2 } // a1 a2 / b1 b2 (the Pusher and Yjs sockets are other doors)
  await waitFor(() => slots(alpha.prefix) >= held.alpha && slots(beta.prefix) >= held.beta, 'both deployments to count their slots')
  const fill: TestClient[] = []
  t.teardown(() => Promise.all(fill.map(c => c.close())))
  while (slots(alpha.prefix) < LIMIT) fill.push(await TestClient.connect(alpha.one.wsUrl, { clientId: `fill-${fill.length}` }))
  t.equal((await tryUpgrade(alpha.two.wsUrl)).status, 429, 'alpha is at its limit')
  const inBeta = await connect(t, beta.two.wsUrl, 'beta-extra')
  t.ok(inBeta.welcome, 'beta still accepts: alpha\'s connections do not count against it')

  // the rate limit counters are per deployment too
  await requestJson(`${beta.one.url}/api/rooms`)

  // every key in Redis starts with one of the two prefixes, and each deployment wrote keys of every kind
  const keys = redis.cli('KEYS', '*').split('\n').filter(Boolean)
  t.ok(keys.length > 20, `${keys.length} keys in Redis`)
  const stray = keys.filter(k => !k.startsWith(alpha.prefix) && !k.startsWith(beta.prefix))
  t.same(stray, [], 'no key outside the two prefixes')
  for (const { prefix } of [alpha, beta]) {
    const mine = keys.filter(k => k.startsWith(prefix)).map(k => k.slice(prefix.length))
    for (const kind of ['room:lobby', 'rooms', 'instance:', 'instances', 'presence:{room:lobby}:u', 'presence:idx:', 'conns:', 'slots:', 'rl:', 'ydoc:{shared/doc}']) {
      t.ok(mine.some(k => k.startsWith(kind)), `${prefix} holds ${kind}…`)
    }
  }
  t.ok(keys.some(k => k.startsWith(`${alpha.prefix}pusher:{${APP.id}:cache-score}`)), 'alpha holds its Pusher cache key')
  t.ok(keys.some(k => k.startsWith(`${beta.prefix}inbox:ann`)), 'beta queued its ann\'s message under its prefix')

  // and every channel: the subscriptions of both deployments are under their prefix
  const subscribed2 = redis.cli('PUBSUB', 'CHANNELS').split('\n').filter(Boolean)
  t.same(subscribed2.filter(c => !c.startsWith(alpha.prefix) && !c.startsWith(beta.prefix)), [], 'no channel outside the two prefixes')
  t.ok(subscribed2.includes(`${alpha.prefix}ch:room:lobby`) && subscribed2.includes(`${beta.prefix}ch:room:lobby`), 'each deployment holds its own lobby channel')
})
