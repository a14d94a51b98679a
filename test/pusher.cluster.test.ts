import { test } from 'tap'
import { build } from './helper.js'
import { redisTestOptions, startRedis } from './redis-server.js'
import { APP_ENV, connected, once, pusherClient, sdkFor, subscribed } from './pusher-clients.js'

test('two instances on one Redis: HTTP-triggered and client events reach subscribers on the other instance, socket_id exclusion holds', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...APP_ENV, REDIS_URL: redis.url }
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
