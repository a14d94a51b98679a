import t from 'tap'
import { build, requestJson, waitFor } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import type { SqliteStore } from '../plugins/store/sqlite.js'

t.test('the background sweep evicts rooms left empty and logs room.evicted', async t => {
  const built = await build(t, {}, { app: { rooms: { evictAfterMs: 100, sweepIntervalMs: 25 } } })
  const { wsUrl, app } = built
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'a' })
  await alice.request({ type: 'join', room: 'b' })
  await alice.request({ type: 'publish', room: 'b', data: 'kept' })
  await alice.request({ type: 'leave', room: 'b' })
  await waitFor(() => built.logs().some(l => l.event === 'room.evicted'), 'room.evicted')
  t.match(built.logs().find(l => l.event === 'room.evicted'), { evicted: 1, loaded: 1 })
  t.match(app.rooms.stats(), { active: 1, loaded: 1 }, 'the room with a member stays')
  const back = await alice.request({ type: 'join', room: 'b', since: 0 })
  t.match(back, { offset: 1, recovered: true, missed: [{ data: 'kept' }] }, 'an evicted room loads again from the store')
})

t.test('concurrent joins of a room being loaded share one load', async t => {
  const { wsUrl, app } = await build(t)
  const store = app.store
  const loads: string[] = []
  const loadRoom = store.loadRoom.bind(store)
  // a slow disk: each read takes 50 ms, so the three joins overlap
  store.loadRoom = async room => {
    loads.push(room)
    await new Promise(resolve => setTimeout(resolve, 50))
    return loadRoom(room)
  }
  const list = await Promise.all(['a', 'b', 'c'].map(clientId => TestClient.connect(wsUrl, { clientId })))
  t.teardown(() => Promise.all(list.map(c => c.close())))
  for (const c of list) c.send({ type: 'join', room: 'busy', id: 'j' })
  for (const c of list) t.match(await c.waitFor(m => m.id === 'j', 'joined'), { type: 'joined' })
  t.equal(loads.length, 4, 'one load for the room, then one snapshot read per join')
})

t.test('a room whose stored state cannot be read is unavailable, not half-loaded, and loads once repaired', async t => {
  const { wsUrl, url, app } = await build(t)
  const db = (app.store as SqliteStore).db
  db.prepare('INSERT INTO rooms (room, state, version, "offset", updated_at) VALUES (?, ?, ?, ?, ?)').run('broken', '{not json', 3, 0, new Date().toISOString())
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  t.match(await alice.request({ type: 'join', room: 'broken' }), { type: 'error', code: 'unavailable' })
  t.match(app.rooms.stats(), { loaded: 0 }, 'nothing half-loaded stays behind')
  t.match(await alice.request({ type: 'publish', room: 'broken', data: 1 }), { code: 'not_in_room' })
  t.equal((await requestJson(`${url}/api/rooms/broken`)).status, 503)

  db.prepare('UPDATE rooms SET state = ? WHERE room = ?').run('{"fixed":true}', 'broken')
  t.match(await alice.request({ type: 'join', room: 'broken' }), { type: 'joined', state: { fixed: true }, version: 3 }, 'the next join retries')
})

t.test('a write the store cannot commit is refused with unavailable and leaves no trace', async t => {
  const built = await build(t)
  const { wsUrl, app } = built
  const db = (app.store as SqliteStore).db
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'r' })
  await alice.request({ type: 'publish', room: 'r', data: 'one' })
  await alice.request({ type: 'update', room: 'r', patch: { n: 1 } })

  db.pragma('query_only = ON')
  t.match(await alice.request({ type: 'publish', room: 'r', data: 'lost' }), { type: 'error', code: 'unavailable' })
  t.match(await alice.request({ type: 'update', room: 'r', patch: { n: 2 } }), { type: 'error', code: 'unavailable' })
  t.ok(built.logs().some(l => l.event === 'store.batch_failed'), 'the failed batch is logged')
  db.pragma('query_only = OFF')

  t.match(await alice.request({ type: 'publish', room: 'r', data: 'two' }), { type: 'ack', offset: 2 }, 'the refused message took no offset')
  t.match(await alice.request({ type: 'update', room: 'r', patch: { m: 1 } }), { type: 'ack', version: 2 })
  const view = await alice.request({ type: 'join', room: 'r', since: 0 })
  t.same(view.state, { n: 1, m: 1 })
  t.same(view.missed.map((m: any) => m.data), ['one', 'two'])
  t.equal(alice.all('room_message').filter(m => m.data === 'lost').length, 0, 'a refused message was never broadcast')
})
