import t from 'tap'
import { build, waitFor, type TestContext } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'

async function connect (t: TestContext, wsUrl: string, clientId: string): Promise<TestClient> {
  const client = await TestClient.connect(wsUrl, { clientId })
  t.teardown(() => client.close())
  return client
}

// a burst of publishes lands in one event-loop turn and crosses Redis as one PUBLISH per room
t.test('a burst crossing instances arrives once each, in order, in every room', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const env = { ...redis.env, RATE_LIMIT_MAX: '1000', WS_MESSAGES_PER_SECOND: '10000' }
  const a = await build(t, env)
  const b = await build(t, env)
  const rooms = ['r1', 'r2', 'r3']
  const readers = await Promise.all(rooms.map(room => connect(t, a.wsUrl, `reader-${room}`)))
  for (const [i, room] of rooms.entries()) await readers[i].request({ type: 'join', room })
  const writer = await connect(t, b.wsUrl, 'writer')
  for (const room of rooms) await writer.request({ type: 'join', room })
  const N = 200
  for (let i = 0; i < N; i++) {
    for (const room of rooms) writer.send({ type: 'publish', room, data: { i } })
  }
  await waitFor(() => readers.every(r => r.all('room_message').length >= N), 'every message on instance A', 10000)
  await new Promise(resolve => setTimeout(resolve, 200))
  for (const [i, room] of rooms.entries()) {
    const got = readers[i].all('room_message')
    t.equal(got.length, N, `${room}: every message once`)
    t.same(got.map(m => m.data.i), Array.from({ length: N }, (_, k) => k), `${room}: in publish order`)
    t.ok(got.every(m => m.room === room), `${room}: only its own messages`)
    t.same(got.map(m => m.offset), Array.from({ length: N }, (_, k) => k + 1), `${room}: offsets 1..${N}`)
  }
  const stats = redis.cli('INFO', 'commandstats')
  const publishes = Number(/cmdstat_publish:calls=(\d+)/.exec(stats)?.[1] ?? 0)
  t.ok(publishes > 0 && publishes < N * rooms.length, `fewer PUBLISH commands (${publishes}) than frames (${N * rooms.length})`)
})
