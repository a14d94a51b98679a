import t from 'tap'
import { Type } from '@sinclair/typebox'
import { ConnectionLimits } from '../plugins/engine/limits.js'
import { Session, SessionRegistry } from '../plugins/engine/sessions.js'
import { Dispatcher } from '../plugins/native/dispatcher.js'
import { Heartbeat } from '../plugins/engine/heartbeat.js'
import { LocalBroker, LocalClients, LocalPresence, type Broker, type ClientDirectory, type Presence } from '../plugins/cluster/index.js'
import { RoomRegistry } from '../plugins/rooms/registry.js'
import { SqliteStore } from '../plugins/store/sqlite.js'
import { parseState, patchedState, recoveryWindow } from '../plugins/store/room-state.js'
import { WsError } from '../protocol/errors.js'
import { tempDir } from './support/helper.js'
import { socketPair } from './support/socket-pair.js'

const quiet = { info () {}, warn () {}, error () {}, debug () {} }

t.test('ConnectionLimits: the total and the per-client limit, each slot given back once', async t => {
  const limits = new ConnectionLimits({ maxConnections: 3, maxPerClient: 2 })
  const a1 = await limits.acquire('a')
  const a2 = await limits.acquire('a')
  t.match(await limits.acquire('a'), { ok: false, scope: 'client', limit: 2, current: 2 }, 'the 3rd of one client is refused')
  const b1 = await limits.acquire('b')
  t.match(await limits.acquire('c'), { ok: false, scope: 'total', limit: 3, current: 3 }, 'the 4th in all is refused')
  t.equal(limits.total, 3)
  if (!a1.ok || !a2.ok || !b1.ok) throw new Error('slots expected')
  a1.release()
  a1.release()
  t.equal(limits.total, 2, 'a release counts once, however often it is called')
  t.match(await limits.acquire('a'), { ok: true }, 'the freed slot is usable again')
})

t.test('one instance: the broker, presence and the client directory have nobody else', async t => {
  const broker: Broker = new LocalBroker()
  const frames: string[] = []
  broker.handle('room', (room, frame) => frames.push(`${room}:${frame}`))
  await broker.subscribe('room', 'lab')
  await broker.publish('room', 'lab', '{}')
  t.same(frames, [], 'nothing comes back from elsewhere (local members are delivered by the registry)')
  const presence: Presence = new LocalPresence()
  t.equal(await presence.occupy('room', 'lab'), true, 'the first subscriber here occupies the channel cluster-wide')
  t.equal(await presence.join('room', 'lab', 'alice', undefined, 1), 'added', 'a member here is a member cluster-wide')
  t.same([...(await presence.members('room', 'lab')).keys()], [], 'no members on other instances')
  const clients: ClientDirectory = new LocalClients()
  t.equal(await clients.publishToClient('bob', '{}'), 0, 'a direct message reaches no other instance')
  t.equal(await clients.clientConnected('alice'), undefined, 'a client is reachable at once')
})

t.test('Dispatcher: validates, answers with the request id and reports each frame', async t => {
  const pair = await socketPair(t)
  const conn = new Session(pair.server, 'alice', 'alice', '127.0.0.1')
  const d = new Dispatcher({}, quiet)
  const events: string[] = []
  d.onFrame(e => events.push(e.reply ?? e.error ?? e.type))
  d.register('double', { n: Type.Number() }, (_conn, msg) => ({ type: 'doubled', n: msg.n * 2 }))
  d.register('boom', {}, () => { throw new WsError('forbidden', 'not you') })

  t.equal(await d.handle(conn, Buffer.from(JSON.stringify({ type: 'double', n: 21, id: 7 })), false), 'ok')
  t.same(await pair.next('doubled'), { type: 'doubled', n: 42, id: 7 }, 'the handler\'s reply carries the request id')
  await d.handle(conn, Buffer.from('{"type":"double","n":"x"}'), false)
  t.match(await pair.next('error'), { code: 'invalid_message', message: /n/ }, 'a field that breaks its schema is named')
  await d.handle(conn, Buffer.from('{"type":"boom"}'), false)
  t.match(await pair.next('error'), { code: 'forbidden', message: 'not you' }, 'a WsError from a handler is its answer')
  await d.handle(conn, Buffer.from('{"type":"nope"}'), false)
  t.match(await pair.next('error'), { code: 'unknown_type' }, 'a type nobody registered')
  t.same(events, ['double', 'doubled', 'invalid_message', 'boom', 'forbidden', 'unknown_type'], 'observers hear every frame and reply')
  t.same(d.types.sort(), ['boom', 'double'])
})

t.test('Heartbeat: pings the live, terminates a connection silent for two intervals', async t => {
  const registry = new SessionRegistry()
  const live = await socketPair(t)
  const silent = await socketPair(t)
  const a = new Session(live.server, 'a', 'a', '127.0.0.1')
  const b = new Session(silent.server, 'b', 'b', '127.0.0.1')
  registry.add(a)
  registry.add(b)
  const hb = new Heartbeat(registry, 1000)
  const now = Date.now()
  b.lastSeen = now - 2500
  const closed = new Promise(resolve => silent.client.once('close', resolve))
  t.equal(hb.sweep(now), 1, 'one connection terminated')
  await closed
  t.equal(live.server.readyState, 1, 'the live one stays open')
  t.equal(hb.terminated, 1)
})

t.test('RoomRegistry over a real SQLite store: join, publish to members, history, leave', async t => {
  const store = SqliteStore.open({ dataDir: tempDir(t), groupCommit: true, inboxMax: 10, inboxTtlMs: 60000, log: quiet })
  t.teardown(() => store.close())
  const rooms = new RoomRegistry(store, new LocalBroker(), new LocalPresence(), { historySize: 10, maxRoomsPerConnection: 1, stateMaxBytes: 1024, evictAfterMs: 0 }, quiet)
  const alice = await socketPair(t)
  const bob = await socketPair(t)
  const a = new Session(alice.server, 'alice', 'alice', '127.0.0.1')
  const b = new Session(bob.server, 'bob', 'bob', '127.0.0.1')

  t.match(await rooms.join(a, 'lab'), { type: 'joined', room: 'lab', members: ['alice'] })
  await rooms.join(b, 'lab')
  t.match(await alice.next('presence'), { event: 'join', clientId: 'bob' }, 'members hear who joins')
  await t.rejects(rooms.join(a, 'other'), { code: 'room_limit' }, 'maxRoomsPerConnection holds')

  const { offset } = await rooms.publish('alice', 'lab', { n: 1 })
  t.equal(offset, 1)
  t.match(await bob.next('room_message'), { room: 'lab', offset: 1, from: 'alice', data: { n: 1 } })
  t.same((await store.loadRoomSince('lab', 0))?.missed.map(m => m.data), [{ n: 1 }], 'the message is in the history')
  t.same(await rooms.update('bob', 'lab', { title: 'x' }), { version: 1 })
  t.match(await alice.next('state'), { version: 1, patch: { title: 'x' }, from: 'bob' })

  t.same(await rooms.leave(b, 'lab'), { type: 'left', room: 'lab' })
  await t.rejects(rooms.requireMember(b, 'lab'), { code: 'not_in_room' }, 'a member that left is not one')
  t.match(rooms.stats(), { active: 1, members: 1 })
})

t.test('the rules both stores share: recovery window, patch size, unreadable state', async t => {
  const snapshot = { room: 'r', state: {}, version: 0, offset: 5, epoch: 'e1' }
  const history = [3, 4, 5].map(offset => ({ type: 'room_message' as const, room: 'r', offset, messageId: String(offset), from: 'a', data: null, timestamp: '', epoch: 'e1' }))
  const after = (from: number) => history.filter(m => m.offset > from)
  t.match(recoveryWindow(snapshot, 2, after), { missed: [{ offset: 3 }, { offset: 4 }, { offset: 5 }], complete: true }, 'every message after since is held')
  t.match(recoveryWindow(snapshot, 1, after), { complete: false }, 'offset 2 is gone: a gap')
  t.match(recoveryWindow(snapshot, 9, after), { missed: [{ offset: 3 }, { offset: 4 }, { offset: 5 }], complete: false }, 'a client ahead of the store gets the whole history')
  t.same(patchedState('r', { a: 1 }, { b: 2 }, 100), { state: { a: 1, b: 2 }, json: '{"a":1,"b":2}' })
  t.throws(() => patchedState('r', {}, { big: 'x'.repeat(100) }, 50), { name: 'StateTooLargeError' })
  t.throws(() => parseState('r', '{oops'), { name: 'StoreUnavailableError', message: /room r is unreadable/ })
})
