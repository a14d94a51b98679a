import t from 'tap'
import Database from 'better-sqlite3'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir, type TestContext } from './support/helper.js'
import { DATABASE_FILE, MIGRATIONS, SqliteStore, StoreOpenError } from '../plugins/store/sqlite.js'
import { applyMergePatch } from '../protocol/merge-patch.js'
import { StateTooLargeError, VersionConflictError } from '../plugins/store/index.js'
import type { DirectMessage } from '../plugins/messages/inbox.js'

function open (t: TestContext, dataDir: string, opts: { groupCommit?: boolean, inboxMax?: number, inboxTtlMs?: number } = {}) {
  const events: Array<Record<string, unknown>> = []
  const log = { info: (o: object) => events.push(o as Record<string, unknown>), error: (o: object) => events.push(o as Record<string, unknown>) }
  const store = SqliteStore.open({ dataDir, groupCommit: opts.groupCommit ?? true, inboxMax: opts.inboxMax ?? 100, inboxTtlMs: opts.inboxTtlMs ?? 60000, log })
  t.teardown(() => store.close())
  return { store, events }
}

const dm = (text: string, at = Date.now()): DirectMessage =>
  ({ type: 'message', messageId: text, from: 'a', to: 'b', text, timestamp: new Date(at).toISOString() })

t.test('a new store is created in DATA_DIR in WAL mode with synchronous=FULL and every migration', async t => {
  const dir = join(tempDir(t), 'nested', 'data')
  const { store, events } = open(t, dir)
  t.equal(store.path, join(dir, DATABASE_FILE))
  t.equal(store.db.pragma('journal_mode', { simple: true }), 'wal')
  t.equal(store.db.pragma('synchronous', { simple: true }), 2, 'FULL')
  const versions = store.db.prepare('SELECT version FROM schema_version ORDER BY version').pluck().all()
  t.same(versions, MIGRATIONS.map(m => m.version))
  t.match(events.find(e => e.event === 'store.migrated'), { applied: MIGRATIONS.map(m => m.version) })
})

t.test('migrations run once and in order: an old database gets only the newer ones, data kept', async t => {
  const dir = tempDir(t)
  const old = new Database(join(dir, DATABASE_FILE))
  old.exec('CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)')
  old.exec(MIGRATIONS[0].sql)
  old.prepare('INSERT INTO schema_version VALUES (1, ?, ?)').run(MIGRATIONS[0].description, new Date().toISOString())
  old.prepare('INSERT INTO rooms VALUES (?, ?, ?, ?, ?)').run('kept', '{"a":1}', 4, 2, new Date().toISOString())
  old.close()

  const { store, events } = open(t, dir)
  t.match(events.find(e => e.event === 'store.migrated'), { applied: MIGRATIONS.slice(1).map(m => m.version) })
  const kept = await store.loadRoom('kept')
  t.match(kept?.epoch, /^[0-9a-f]{16}$/, 'a room stored before epochs existed got one from the migration')
  t.same(kept, { room: 'kept', state: { a: 1 }, version: 4, offset: 2, epoch: kept?.epoch })
  await store.close()
  const again = open(t, dir)
  t.notOk(again.events.some(e => e.event === 'store.migrated'), 'nothing to apply the second time')
  t.equal((await again.store.loadRoom('kept'))?.epoch, kept?.epoch, 'and keeps it')
})

t.test('a database from a newer build is refused', async t => {
  const dir = tempDir(t)
  const first = open(t, dir).store
  first.db.prepare('INSERT INTO schema_version VALUES (99, ?, ?)').run('future', new Date().toISOString())
  // one process holds a DATA_DIR at a time: close it before the reopen is refused for its schema
  await first.close()
  t.throws(() => open(t, dir), { name: 'StoreOpenError', message: /schema version 99, newer than this build/ })
})

t.test('a file that is not a database is refused with a clear error', async t => {
  const dir = tempDir(t)
  writeFileSync(join(dir, DATABASE_FILE), 'this is not an SQLite database, just some text that is long enough'.repeat(100))
  t.throws(() => open(t, dir), StoreOpenError)
  t.throws(() => open(t, dir), { message: new RegExp(`${DATABASE_FILE}.*not a database`) })
})

t.test('group commit puts the writes of one event-loop turn in one transaction', async t => {
  const { store } = open(t, tempDir(t))
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) =>
    store.applyPatch('r', { [`k${i}`]: i }, { maxBytes: 1e6 })))
  t.same(results.map(r => r.version), Array.from({ length: 100 }, (_, i) => i + 1))
  t.match(store.counters, { commits: 1, writes: 100 })
  const messages = await Promise.all(Array.from({ length: 10 }, (_, i) =>
    store.appendMessage('r', { messageId: `m${i}`, from: 'a', data: i, timestamp: new Date().toISOString() }, 5)))
  t.same(messages.map(m => m.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
  t.match(store.counters, { commits: 2, writes: 110 })
  const since = await store.loadRoomSince('r', 0)
  t.same(since?.missed.map(m => m.offset), [6, 7, 8, 9, 10], 'history is trimmed to its size')
  t.equal(since?.complete, false)
  t.equal(since?.version, 100)
})

t.test('a publish writes its message and the room offset, not the room state; offsets survive a reopen', async t => {
  const dir = tempDir(t)
  const first = open(t, dir)
  const store = first.store
  // a state near ROOM_STATE_MAX_BYTES (256 KiB), which a publish must not hand to SQLite again
  const big = { blob: 'x'.repeat(250000) }
  await store.applyPatch('r', big, { maxBytes: 262144 })
  for (let i = 1; i <= 50; i++) {
    await store.appendMessage('r', { messageId: `m${i}`, from: 'a', data: i, timestamp: new Date().toISOString() }, 100)
  }
  t.match(store.counters, { commits: 51 }, 'one commit per publish here')
  const stateRow = () => store.db.prepare('SELECT version, "offset" AS "offset", updated_at FROM rooms WHERE room = ?').get('r')
  t.match(stateRow(), { version: 1, offset: 0 }, 'the state row was not written again by 50 publishes')
  t.same(store.db.prepare('SELECT "offset" AS "offset" FROM room_offsets WHERE room = ?').get('r'), { offset: 50 }, 'the offset was')

  await store.applyPatch('r', { n: 1 }, { maxBytes: 262144 })
  const { epoch } = await store.appendMessage('r', { messageId: 'm51', from: 'a', data: 51, timestamp: new Date().toISOString() }, 100)
  store.close()
  const again = open(t, dir).store
  t.same(await again.loadRoom('r'), { room: 'r', state: { ...big, n: 1 }, version: 2, offset: 51, epoch }, 'state, version, offset and epoch after a reopen')
  t.same(await again.listRooms(), [{ room: 'r', version: 2, offset: 51 }], 'and in the room list')
  t.same((await again.loadRoomSince('r', 49))?.missed.map(m => m.offset), [50, 51])
})

t.test('with group commit off every write is its own transaction', async t => {
  const { store } = open(t, tempDir(t), { groupCommit: false })
  await Promise.all(Array.from({ length: 20 }, (_, i) => store.applyPatch('r', { [`k${i}`]: i }, { maxBytes: 1e6 })))
  t.match(store.counters, { commits: 20, writes: 20 })
  t.equal(Object.keys((await store.loadRoom('r'))?.state ?? {}).length, 20)
})

t.test('loadRoom shows only committed changes; conflicts and oversized states change nothing', async t => {
  const { store } = open(t, tempDir(t))
  t.equal(await store.loadRoom('r'), null, 'a room never written')
  const pending = store.applyPatch('r', { a: 1 }, { maxBytes: 100 })
  t.equal(await store.loadRoom('r'), null, 'not before the commit')
  await pending
  const epoch = (await store.loadRoom('r'))?.epoch
  t.match(epoch, /^[0-9a-f]{16}$/, 'the first write chose the epoch')
  t.same(await store.loadRoom('r'), { room: 'r', state: { a: 1 }, version: 1, offset: 0, epoch })
  await t.rejects(store.applyPatch('r', { a: 2 }, { baseVersion: 0, maxBytes: 100 }), VersionConflictError)
  await t.rejects(store.applyPatch('r', { b: 'x'.repeat(200) }, { maxBytes: 100 }), StateTooLargeError)
  t.same(await store.loadRoom('r'), { room: 'r', state: { a: 1 }, version: 1, offset: 0, epoch })
})

t.test('queued direct messages: oldest first, at most INBOX_MAX, expired ones dropped', async t => {
  const { store } = open(t, tempDir(t), { inboxMax: 3, inboxTtlMs: 1000 })
  for (const text of ['1', '2', '3', '4']) await store.inbox.push('bob', dm(text))
  await store.inbox.push('carol', dm('old', Date.now() - 5000))
  await store.inbox.push('carol', dm('new'))
  t.same((await store.inbox.drain('bob')).map(m => m.text), ['2', '3', '4'])
  t.same(await store.inbox.drain('bob'), [], 'drained once')
  t.equal(await store.inbox.expire(), 1)
  t.same((await store.inbox.drain('carol')).map(m => m.text), ['new'])
})

t.test('JSON Merge Patch follows RFC 7396 and never mutates the state it is given', async t => {
  const cases: Array<[unknown, unknown, unknown]> = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }]
  ]
  for (const [state, patch, expected] of cases) {
    const before = JSON.stringify(state)
    t.same(applyMergePatch(state as Record<string, unknown>, patch), expected, `${before} + ${JSON.stringify(patch)}`)
    t.equal(JSON.stringify(state), before, 'the input is unchanged')
  }
  for (const key of ['__proto__', 'constructor', 'prototype']) {
    const patch = JSON.parse(`{"deep":{"${key}":{"polluted":true}}}`)
    t.throws(() => applyMergePatch({}, patch), { name: 'InvalidPatchError', message: new RegExp(key) })
  }
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})
