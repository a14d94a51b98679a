import t, { type Test } from 'tap'
import { build, requestJson } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'

/** GET /api/rooms/:room/history returns the room_message frames members got, epoch included, on either store. */
async function historyCarriesEpoch (t: Test, env: Record<string, string>): Promise<void> {
  const { url, wsUrl } = await build(t, env)
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'notes' })
  await alice.request({ type: 'publish', room: 'notes', data: { n: 1 } })
  await alice.request({ type: 'publish', room: 'notes', data: 'two' })
  const live = [await alice.next('room_message'), await alice.next('room_message')]

  const room = await requestJson(`${url}/api/rooms/notes`)
  t.match(room.body.epoch, /^[0-9a-f]{16}$/, 'the room has an epoch')
  const history = await requestJson(`${url}/api/rooms/notes/history`)
  t.equal(history.status, 200)
  t.same(history.body.messages.map((m: Record<string, unknown>) => m.epoch), [room.body.epoch, room.body.epoch], 'every history message carries the room\'s epoch')
  t.same(history.body.messages, live, 'the history holds the room_message frames the member received, field for field')
}

t.test('history messages carry epoch on the SQLite store', async t => {
  await historyCarriesEpoch(t, {})
})

t.test('history messages carry epoch on the Redis store', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  await historyCarriesEpoch(t, { ...redis.env })
})
