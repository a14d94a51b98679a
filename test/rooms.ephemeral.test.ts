import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('with persistMessages off, room messages reach every member with growing offsets and nothing is stored', async t => {
  const { app, wsUrl } = await build(t, {}, { app: { rooms: { persistMessages: false } } })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => Promise.all([alice.close(), bob.close()]))
  await alice.request({ type: 'join', room: 'live' })
  await bob.request({ type: 'join', room: 'live' })

  const acks = []
  for (let i = 1; i <= 3; i++) acks.push(await alice.request({ type: 'publish', room: 'live', data: { n: i } }))
  t.same(acks.map(a => a.offset), [1, 2, 3], 'acks carry offsets counted from 1')
  for (let i = 0; i < 3; i++) await bob.next('room_message')
  t.same(bob.all('room_message').map(m => [m.offset, m.data.n, m.from]), [[1, 1, 'alice'], [2, 2, 'alice'], [3, 3, 'alice']])

  const rejoined = await TestClient.connect(wsUrl, { clientId: 'carol' })
  t.teardown(() => rejoined.close())
  const joined = await rejoined.request({ type: 'join', room: 'live', since: 0 })
  t.same(joined.missed, [], 'no history is kept')
  t.equal(await app.store.loadRoom('live').then(r => r?.offset ?? 0), 0, 'the store holds no offset for these messages')
})
