import t from 'tap'
import { build, requestJson, waitFor, type TestContext } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

async function clients (t: TestContext, wsUrl: string, ...ids: string[]): Promise<TestClient[]> {
  const list = await Promise.all(ids.map(clientId => TestClient.connect(wsUrl, { clientId })))
  t.teardown(() => Promise.all(list.map(c => c.close())))
  return list
}

t.test('three clients in a room see each other join and leave', async t => {
  const { wsUrl } = await build(t)
  const [alice, bob, carol] = await clients(t, wsUrl, 'alice', 'bob', 'carol')

  const a = await alice.request({ type: 'join', room: 'lobby' })
  t.match(a, { type: 'joined', room: 'lobby', state: {}, version: 0, offset: 0, members: ['alice'], missed: [], recovered: false })

  const b = await bob.request({ type: 'join', room: 'lobby' })
  t.same(b.members.sort(), ['alice', 'bob'])
  t.match(await alice.next('presence'), { room: 'lobby', event: 'join', clientId: 'bob' })

  const c = await carol.request({ type: 'join', room: 'lobby' })
  t.same(c.members.sort(), ['alice', 'bob', 'carol'])
  for (const other of [alice, bob]) t.match(await other.next('presence'), { event: 'join', clientId: 'carol' })

  t.match(await bob.request({ type: 'leave', room: 'lobby' }), { type: 'left', room: 'lobby' })
  for (const other of [alice, carol]) t.match(await other.next('presence'), { room: 'lobby', event: 'leave', clientId: 'bob' })

  await carol.close()
  t.match(await alice.next('presence'), { event: 'leave', clientId: 'carol' }, 'a disconnect leaves the room')
  t.equal(bob.all('presence').filter(p => p.event === 'leave').length, 0, 'a client outside the room hears nothing')
})

t.test('presence leave comes only when the last connection of a client leaves', async t => {
  const { wsUrl } = await build(t)
  const [alice, bob1, bob2] = await clients(t, wsUrl, 'alice', 'bob', 'bob')
  await alice.request({ type: 'join', room: 'r' })
  await bob1.request({ type: 'join', room: 'r' })
  t.match(await alice.next('presence'), { event: 'join', clientId: 'bob' })
  const second = await bob2.request({ type: 'join', room: 'r' })
  t.same(second.members.sort(), ['alice', 'bob'], 'a client is listed once however many connections it has')

  await bob1.close()
  await alice.request({ type: 'ping' })
  t.equal(alice.all('presence').length, 1, 'no presence for a second connection joining, nor for the first one leaving')
  await bob2.request({ type: 'leave', room: 'r' })
  t.match(await alice.next('presence'), { event: 'leave', clientId: 'bob' })
})

t.test('a publish reaches every member, the sender included, and is acknowledged with its offset', async t => {
  const { wsUrl } = await build(t)
  const [alice, bob, carol, outsider] = await clients(t, wsUrl, 'alice', 'bob', 'carol', 'dave')
  for (const c of [alice, bob, carol]) await c.request({ type: 'join', room: 'chat' })

  const ack1 = await alice.request({ type: 'publish', room: 'chat', data: { text: 'hi' } })
  t.match(ack1, { type: 'ack', room: 'chat', offset: 1, messageId: String })
  const ack2 = await bob.request({ type: 'publish', room: 'chat', data: [1, 2, 3] })
  t.equal(ack2.offset, 2)

  for (const c of [alice, bob, carol]) {
    const m1 = await c.next('room_message')
    const m2 = await c.next('room_message')
    t.match(m1, { room: 'chat', offset: 1, messageId: ack1.messageId, from: 'alice', data: { text: 'hi' } })
    t.match(m1.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
    t.match(m2, { offset: 2, from: 'bob', data: [1, 2, 3] })
  }
  await outsider.request({ type: 'ping' })
  t.equal(outsider.all('room_message').length, 0)
})

t.test('state patches from several clients converge on every member', async t => {
  const { wsUrl } = await build(t)
  const [alice, bob, carol] = await clients(t, wsUrl, 'alice', 'bob', 'carol')
  for (const c of [alice, bob, carol]) await c.request({ type: 'join', room: 'doc' })

  const acks = await Promise.all([
    alice.request({ type: 'update', room: 'doc', patch: { title: 'Plan', tags: ['a'] } }),
    bob.request({ type: 'update', room: 'doc', patch: { body: { intro: 'hello', draft: true } } }),
    carol.request({ type: 'update', room: 'doc', patch: { owner: 'carol' } })
  ])
  t.same(acks.map(a => a.version).sort(), [1, 2, 3])
  await alice.request({ type: 'update', room: 'doc', patch: { body: { draft: null }, owner: null } })

  for (const c of [alice, bob, carol]) {
    const states = []
    for (let i = 0; i < 4; i++) states.push(await c.next('state'))
    t.same(states.map(s => s.version), [1, 2, 3, 4], 'each member sees every version, in order')
    t.match(states[3], { room: 'doc', from: 'alice', patch: { body: { draft: null }, owner: null } })
  }
  const late = await TestClient.connect(wsUrl, { clientId: 'erin' })
  t.teardown(() => late.close())
  const joined = await late.request({ type: 'join', room: 'doc' })
  t.same(joined.state, { title: 'Plan', tags: ['a'], body: { intro: 'hello' } })
  t.equal(joined.version, 4)
})

t.test('an update with a stale baseVersion is refused with version_conflict and changes nothing', async t => {
  const { wsUrl } = await build(t)
  const [alice, bob] = await clients(t, wsUrl, 'alice', 'bob')
  await alice.request({ type: 'join', room: 'doc' })
  await bob.request({ type: 'join', room: 'doc' })
  t.equal((await alice.request({ type: 'update', room: 'doc', patch: { n: 1 }, baseVersion: 0 })).version, 1)
  const conflict = await bob.request({ type: 'update', room: 'doc', patch: { n: 99 }, baseVersion: 0 })
  t.match(conflict, { type: 'error', code: 'version_conflict', currentVersion: 1 })
  t.equal((await bob.request({ type: 'update', room: 'doc', patch: { n: 2 }, baseVersion: 1 })).version, 2)
  const view = await alice.request({ type: 'join', room: 'doc' })
  t.same([view.state, view.version], [{ n: 2 }, 2])
})

t.test('a connection is refused a room beyond MAX_ROOMS_PER_CONNECTION', async t => {
  const { wsUrl } = await build(t, { MAX_ROOMS_PER_CONNECTION: '2' })
  const [alice] = await clients(t, wsUrl, 'alice')
  await alice.request({ type: 'join', room: 'one' })
  await alice.request({ type: 'join', room: 'two' })
  t.match(await alice.request({ type: 'join', room: 'three' }), { type: 'error', code: 'room_limit', limit: 2 })
  t.match(await alice.request({ type: 'join', room: 'two' }), { type: 'joined' }, 'joining a room it is already in is fine')
  await alice.request({ type: 'leave', room: 'one' })
  t.match(await alice.request({ type: 'join', room: 'three' }), { type: 'joined', room: 'three' })
})

t.test('publish, update and leave outside a room are refused with not_in_room', async t => {
  const { wsUrl } = await build(t)
  const [alice, bob] = await clients(t, wsUrl, 'alice', 'bob')
  await alice.request({ type: 'join', room: 'r' })
  t.match(await bob.request({ type: 'publish', room: 'r', data: 1 }), { type: 'error', code: 'not_in_room' })
  t.match(await bob.request({ type: 'update', room: 'r', patch: { x: 1 } }), { type: 'error', code: 'not_in_room' })
  t.match(await bob.request({ type: 'leave', room: 'r' }), { type: 'error', code: 'not_in_room' })
  const view = await alice.request({ type: 'join', room: 'r' })
  t.same([view.offset, view.version], [0, 0], 'nothing reached the room')
})

t.test('a join followed at once by a publish on the same connection is in order', async t => {
  const { wsUrl } = await build(t)
  const [alice] = await clients(t, wsUrl, 'alice')
  alice.send({ type: 'join', room: 'fast', id: 'j' })
  alice.send({ type: 'publish', room: 'fast', data: 'first', id: 'p' })
  t.match(await alice.waitFor(m => m.id === 'j', 'joined'), { type: 'joined' })
  t.match(await alice.waitFor(m => m.id === 'p', 'ack'), { type: 'ack', offset: 1 })
})

t.test('bad input gets a clear error, loses nothing and keeps the connection open', async t => {
  const { wsUrl } = await build(t, { ROOM_STATE_MAX_BYTES: '200' })
  const [alice, bob] = await clients(t, wsUrl, 'alice', 'bob')
  await alice.request({ type: 'join', room: 'r' })
  await bob.request({ type: 'join', room: 'r' })
  await alice.request({ type: 'update', room: 'r', patch: { keep: 'me' } })
  await alice.request({ type: 'publish', room: 'r', data: 'kept' })

  for (const room of ['', 'has space', 'x'.repeat(129), 'semi;colon', 'ü']) {
    const err = await alice.request({ type: 'join', room })
    t.match(err, { type: 'error', code: 'invalid_message', message: /room/ }, `room name ${JSON.stringify(room)}`)
  }
  for (const patch of [[1, 2], 'text', 42, null]) {
    const err = await alice.request({ type: 'update', room: 'r', patch })
    t.match(err, { type: 'error', code: 'invalid_message', message: /patch/ }, `patch ${JSON.stringify(patch)}`)
  }
  const big = await alice.request({ type: 'update', room: 'r', patch: { blob: 'x'.repeat(300) } })
  t.match(big, { type: 'error', code: 'state_too_large', maxBytes: 200 })
  const nested = await alice.request({ type: 'update', room: 'r', patch: { a: { prototype: { polluted: true } } } })
  t.match(nested, { type: 'error', code: 'invalid_message', message: /prototype/ })
  alice.send('{"type":"update","room":"r","patch":{"__proto__":{"polluted":true}},"id":"proto"}')
  t.match(await alice.waitFor(m => m.id === 'proto' || (m.type === 'error' && m.code === 'invalid_message' && m.id === undefined), 'proto error'), { type: 'error', code: 'invalid_message' })
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was polluted')
  alice.send('{"type":"publish","room":"r","data":')
  t.match(await alice.next('error'), { code: 'invalid_message', message: /JSON/ })
  t.match(await alice.request({ type: 'publish', room: 'r' }), { code: 'invalid_message', message: /data/ }, 'publish without data')
  t.match(await alice.request({ type: 'join', room: 'r', since: -1 }), { code: 'invalid_message', message: /since/ })

  t.ok(alice.open, 'the connection is still open')
  const view = await alice.request({ type: 'join', room: 'r' })
  t.same([view.state, view.version, view.offset], [{ keep: 'me' }, 1, 1], 'nothing was lost or changed')
  t.equal(bob.all('state').length, 1, 'refused updates were never broadcast')
  t.match(await alice.request({ type: 'publish', room: 'r', data: 'still works' }), { type: 'ack', offset: 2 })
})

t.test('status reports active rooms and members; empty rooms are evicted', async t => {
  const { wsUrl, url, app } = await build(t)
  const [alice, bob] = await clients(t, wsUrl, 'alice', 'bob')
  await alice.request({ type: 'join', room: 'a' })
  await bob.request({ type: 'join', room: 'a' })
  await bob.request({ type: 'join', room: 'b' })
  t.match((await requestJson(`${url}/api/status`)).body.rooms, { active: 2, members: 3 })
  await bob.close()
  await waitFor(() => app.rooms.stats().members === 1, 'bob to leave')
  t.match(app.rooms.stats(), { active: 1, loaded: 2 }, 'an empty room stays in memory for a while')
  t.equal(app.rooms.sweep(Date.now() + 60000), 1, 'the empty room is evicted once it has been empty long enough')
  t.match(app.rooms.stats(), { active: 1, loaded: 1 })
})
