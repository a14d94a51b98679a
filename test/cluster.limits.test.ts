import t from 'tap'
import { requestJson, waitFor } from './support/helper.js'
import { startServer } from './support/process.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'

const INSTANCE_TTL_MS = 1500

t.test('the per-client limit counts across instances and a killed instance frees its slots', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...redis.env, MAX_CONNECTIONS_PER_CLIENT: '3', REDIS_INSTANCE_TTL_MS: String(INSTANCE_TTL_MS) }
  const a = await startServer(t, env)
  const b = await startServer(t, env)

  // every connection comes from 127.0.0.1: one client key
  const held = [
    await TestClient.connect(a.wsUrl, { clientId: 'x1' }),
    await TestClient.connect(a.wsUrl, { clientId: 'x2' }),
    await TestClient.connect(b.wsUrl, { clientId: 'x3' })
  ]
  t.teardown(() => Promise.all(held.map(c => c.close())))

  for (const [name, server] of [['A', a], ['B', b]] as const) {
    const refused = await tryUpgrade(server.wsUrl)
    t.equal(refused.status, 429, `the 4th connection is refused on instance ${name}`)
    t.match(refused.body, { error: 'connection_limit_exceeded', scope: 'client', limit: 3, current: 3 })
  }

  // A closes one cleanly: the slot is free at once, for any instance
  // the release reaches Redis once the server sees the socket close: a moment after the client does
  await held[0].close()
  let replacement: TestClient | undefined
  await waitFor(async () => {
    replacement = await TestClient.connect(b.wsUrl, { clientId: 'x4' }).catch(() => undefined)
    return replacement !== undefined
  }, 'the closed connection\'s slot to be free on the other instance', 2000)
  t.teardown(() => replacement?.close())
  t.equal((await tryUpgrade(a.wsUrl)).status, 429, 'full again: A holds 1, B holds 2')

  a.proc.kill('SIGKILL')
  await a.exited
  const killedAt = Date.now()
  t.equal((await tryUpgrade(b.wsUrl)).status, 429, 'right after kill -9, the dead instance\'s slot still counts')
  // it counts until A's heartbeat key expires
  // the probe that gets in keeps its slot: a probe that closed again would race its own release
  let more: TestClient | undefined
  await waitFor(async () => {
    more = await TestClient.connect(b.wsUrl, { clientId: 'y1' }).catch(() => undefined)
    return more !== undefined
  }, 'the killed instance\'s slot to expire', INSTANCE_TTL_MS + 5000)
  const freedAfter = Date.now() - killedAt
  t.ok(freedAfter <= INSTANCE_TTL_MS + 2000, `freed ${freedAfter} ms after kill -9 (REDIS_INSTANCE_TTL_MS ${INSTANCE_TTL_MS})`)
  t.teardown(() => more?.close())
  t.equal((await tryUpgrade(b.wsUrl)).status, 429, 'B now holds all 3 and refuses a 4th')

  const status = await requestJson(`${b.url}/api/status`)
  t.match(status.body, { status: 'ok', redis: { enabled: true, status: 'ready' }, connections: { total: 3, perClientMax: 3 } })
})

t.test('the HTTP rate limit is shared through Redis', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...redis.env, RATE_LIMIT_MAX: '4' }
  const { build } = await import('./support/helper.js')
  const a = await build(t, env)
  const b = await build(t, env)
  const codes: number[] = []
  for (const url of [a.url, b.url, a.url, b.url, a.url, b.url]) codes.push((await requestJson(`${url}/api/rooms`)).status)
  t.same(codes, [200, 200, 200, 200, 429, 429], 'the 5th request is refused, whichever instance it hits')
})
