import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('a client that rejoins with since gets exactly the 20 messages it missed, in order', async t => {
  const { wsUrl } = await build(t)
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => Promise.all([alice.close(), bob.close()]))
  await alice.request({ type: 'join', room: 'feed' })
  await bob.request({ type: 'join', room: 'feed' })
  for (let i = 1; i <= 5; i++) await alice.request({ type: 'publish', room: 'feed', data: { n: i } })
  for (let i = 0; i < 5; i++) await bob.next('room_message')
  const lastSeen = bob.all('room_message').at(-1)?.offset
  t.equal(lastSeen, 5)
  await bob.close()

  const published = []
  for (let i = 6; i <= 25; i++) published.push((await alice.request({ type: 'publish', room: 'feed', data: { n: i } })).messageId)

  const back = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => back.close())
  const joined = await back.request({ type: 'join', room: 'feed', since: lastSeen })
  t.equal(joined.recovered, true)
  t.equal(joined.offset, 25)
  t.equal(joined.missed.length, 20)
  t.same(joined.missed.map((m: any) => m.offset), Array.from({ length: 20 }, (_, i) => i + 6))
  t.same(joined.missed.map((m: any) => m.data.n), Array.from({ length: 20 }, (_, i) => i + 6))
  t.same(joined.missed.map((m: any) => m.messageId), published, 'the very messages that were published')
  t.match(joined.missed[0], { type: 'room_message', room: 'feed', from: 'alice', timestamp: String })

  const upToDate = await back.request({ type: 'join', room: 'feed', since: 25 })
  t.same([upToDate.missed, upToDate.recovered], [[], true], 'nothing missed is a full recovery')
})

t.test('a client further behind than the history gets recovered:false and the latest history', async t => {
  const { wsUrl } = await build(t, { ROOM_HISTORY_SIZE: '10' })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'feed' })
  for (let i = 1; i <= 30; i++) await alice.request({ type: 'publish', room: 'feed', data: i })

  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => bob.close())
  const behind = await bob.request({ type: 'join', room: 'feed', since: 3 })
  t.equal(behind.recovered, false)
  t.same(behind.missed.map((m: any) => m.offset), Array.from({ length: 10 }, (_, i) => i + 21), 'the last 10 messages')

  const edge = await bob.request({ type: 'join', room: 'feed', since: 20 })
  t.equal(edge.recovered, true, 'the oldest kept message is exactly the next one')
  t.equal(edge.missed.length, 10)

  const ahead = await bob.request({ type: 'join', room: 'feed', since: 99 })
  t.equal(ahead.recovered, false, 'an offset the room never reached cannot be recovered')
  t.equal(ahead.missed.length, 10)

  const fresh = await bob.request({ type: 'join', room: 'never-used', since: 0 })
  t.same([fresh.recovered, fresh.missed, fresh.offset], [true, [], 0])
})

t.test('with ROOM_HISTORY_SIZE=0 offsets still grow and nothing is recoverable', async t => {
  const { wsUrl } = await build(t, { ROOM_HISTORY_SIZE: '0' })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'r' })
  for (let i = 1; i <= 3; i++) t.equal((await alice.request({ type: 'publish', room: 'r', data: i })).offset, i)
  const again = await alice.request({ type: 'join', room: 'r', since: 1 })
  t.same([again.recovered, again.missed, again.offset], [false, [], 3])
})
