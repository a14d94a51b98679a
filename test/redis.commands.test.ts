import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'

/**
 * "No cost when unused": the Redis commands one room publish and one direct
 * message cost on a single Redis, counted by redis-server itself (INFO
 * commandstats; a script's inner commands are counted too). Each publish
 * waits for its delivery on the other instance, so each goes out as its own
 * PUBLISH (no batching). The heartbeat is slowed past the test's length so
 * only the publishes count. The figures are the ones of the version before
 * REDIS_KEY_PREFIX, Sentinel and Cluster support (docs/redis.md): they must
 * not grow.
 */
const N = 100

function commandstats (cli: (...args: string[]) => string): Record<string, number> {
  const calls: Record<string, number> = {}
  for (const m of cli('INFO', 'commandstats').matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (m[1] === 'info' || m[1].startsWith('config')) continue
    // a script's first run is an EVAL (ioredis then sends EVALSHA): both are one script call
    const name = m[1] === 'eval' || m[1] === 'evalsha' ? 'script' : m[1]
    calls[name] = (calls[name] ?? 0) + Number(m[2])
  }
  return calls
}

t.test('commands per room publish and per direct message on a single Redis', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { REDIS_URL: redis.url, RATE_LIMIT_MAX: '100000', WS_MESSAGES_PER_SECOND: '100000', REDIS_INSTANCE_TTL_MS: '600000' }
  const a = await build(t, env)
  const b = await build(t, env)
  const pub = await TestClient.connect(a.wsUrl, { clientId: 'pub' })
  const sub = await TestClient.connect(b.wsUrl, { clientId: 'sub' })
  t.teardown(() => Promise.all([pub.close(), sub.close()]))
  await pub.request({ type: 'join', room: 'r' })
  await sub.request({ type: 'join', room: 'r' })
  await pub.request({ type: 'publish', room: 'r', data: 'warm-up' }) // the room's first write lists it, once
  await sub.next('room_message')

  redis.cli('CONFIG', 'RESETSTAT')
  for (let i = 0; i < N; i++) {
    await pub.request({ type: 'publish', room: 'r', data: i })
    await sub.next('room_message')
  }
  const publish = commandstats(redis.cli.bind(redis))
  const perPublish = Object.values(publish).reduce((n, c) => n + c, 0) / N
  t.comment(`room publish: ${perPublish} commands each ${JSON.stringify(publish)}`)
  t.same(publish, { script: N, hget: N, hincrby: N, rpush: N, ltrim: N, publish: N },
    'one script (HGET, HINCRBY, RPUSH, LTRIM) and one PUBLISH per publish: 6 commands')

  redis.cli('CONFIG', 'RESETSTAT')
  let delivered = 0
  for (let i = 0; i < N; i++) {
    delivered += (await pub.request({ type: 'send', to: 'sub', text: String(i) })).delivered
    await sub.next('message')
  }
  t.equal(delivered, N, 'every message was delivered live on the other instance')
  const send = commandstats(redis.cli.bind(redis))
  t.comment(`direct message: ${Object.values(send).reduce((n, c) => n + c, 0) / N} commands each ${JSON.stringify(send)}`)
  t.same(send, { script: N, hgetall: N, exists: N, publish: N },
    'one script (HGETALL, EXISTS of the other instance\'s heartbeat, PUBLISH) per message: 4 commands')
})
