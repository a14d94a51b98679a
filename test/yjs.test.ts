import t from 'tap'
import * as Y from 'yjs'
import { createSigner } from 'fast-jwt'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { existsSync } from 'node:fs'
import { build, tempDir, waitFor } from './support/helper.js'
import { tryUpgrade } from './support/ws-client.js'
import { converged, stateOf, synced, syncedPair, yEditor } from './support/yjs-editors.js'

const SECRET = 'yjs-test-secret-that-is-long-enough-0123456789'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)

t.test('two y-websocket editors edit a text and a map concurrently, offline and back, and converge byte for byte', async t => {
  const { url } = await build(t)
  const a = yEditor(t, url, 'notes/one')
  const b = yEditor(t, url, 'notes/one')
  await synced(a)
  await synced(b)

  a.text.insert(0, 'hello ')
  b.text.insert(0, 'world ')
  a.map.set('title', 'from a')
  b.map.set('count', 1)
  await converged([a, b])
  t.equal(a.text.toString().length, 12, 'both insertions kept')
  t.same(a.map.toJSON(), { title: 'from a', count: 1 })

  // b goes offline and keeps typing; a types meanwhile
  b.provider.disconnect()
  b.text.insert(b.text.length, 'offline-b')
  b.map.set('title', 'from b offline')
  a.text.insert(0, 'online-a ')
  a.text.delete(9, 3)
  await waitFor(() => a.text.toString().startsWith('online-a'), 'a to apply its own edit')
  t.notOk(stateOf(a.doc).equals(stateOf(b.doc)), 'diverged while offline')
  b.provider.connect()
  await converged([a, b], 'the offline edits to be merged')
  t.match(a.text.toString(), /online-a/)
  t.match(a.text.toString(), /offline-b/)
  t.equal(a.map.get('title'), b.map.get('title'))

  // a third editor that joins later gets everything from the server
  const c = yEditor(t, url, 'notes/one')
  await synced(c)
  await converged([a, b, c], 'a late editor to catch up')
  t.same(c.doc.getText('t').toString(), a.text.toString())
})

t.test('documents survive a restart of the app: snapshot plus tail, compacted', async t => {
  const first = await build(t, { YJS_COMPACT_AFTER_UPDATES: '5' })
  const [a, b] = await syncedPair(t, first.url, 'restart-doc')
  for (let i = 0; i < 12; i++) {
    a.text.insert(a.text.length, `a${i} `)
    b.map.set(`k${i}`, i)
  }
  a.text.delete(0, 3)
  await converged([a, b])
  const expected = stateOf(a.doc)
  a.provider.destroy()
  b.provider.destroy()
  await first.app.close()
  const db = new Database(join(first.dataDir, 'switchboard.db'), { readonly: true })
  const snapshots = (db.prepare('SELECT count(*) AS n FROM ydoc_snapshot WHERE name = ?').get('restart-doc') as { n: number }).n
  const tail = (db.prepare('SELECT count(*) AS n FROM ydoc_update WHERE name = ?').get('restart-doc') as { n: number }).n
  db.close()
  t.equal(snapshots, 1, 'compacted into a snapshot')
  t.ok(tail < 5, `a tail of ${tail} updates after 25 edits`)

  const second = await build(t, {}, { dataDir: first.dataDir })
  const c = yEditor(t, second.url, 'restart-doc')
  await synced(c)
  t.ok(stateOf(c.doc).equals(expected), 'the reloaded document is the one the editors had, byte for byte')
  t.same(c.map.toJSON(), Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`k${i}`, i])))
})

t.test('tokens: the rooms claim gives write, read-only or no access; no token is 401', async t => {
  const { url, rawLogs } = await build(t, { AUTH_SECRET: SECRET })
  const ws = url.replace(/^http/, 'ws')
  t.equal((await tryUpgrade(`${ws}/yjs/secret-doc`)).status, 401, 'no token')
  t.equal((await tryUpgrade(`${ws}/yjs/secret-doc`, { query: { token: 'not-a-token' } })).status, 401, 'a bad token')
  const other = await tryUpgrade(`${ws}/yjs/secret-doc`, { query: { token: sign({ sub: 'eve', rooms: ['public/*'] }) } })
  t.equal(other.status, 403, 'a claim without the document')
  t.match(other.body, { code: 'forbidden', message: /secret-doc/ })
  t.equal((await tryUpgrade(`${ws}/yjs/bad name`, { query: { token: sign({ sub: 'eve' }) } })).status, 400, 'an invalid name')
  t.equal((await tryUpgrade(`${ws}/yjs/secret-doc`, { query: { token: sign({ sub: 'eve' }) }, headers: { origin: 'http://evil.example' } })).status, 403, 'an origin not allowed')
  const plain = await fetch(`${url}/yjs/secret-doc?token=${sign({ sub: 'eve' })}`)
  t.equal(plain.status, 426, 'a plain GET is told to upgrade')

  const writer = yEditor(t, url, 'team/doc', { token: sign({ sub: 'alice', rooms: ['team/*'] }) })
  const reader = yEditor(t, url, 'team/doc', { token: sign({ sub: 'bob', rooms: ['read:team/*'] }) })
  await synced(writer)
  await synced(reader)
  writer.text.insert(0, 'written')
  await waitFor(() => reader.text.toString() === 'written', 'the reader to receive the writer\'s text')
  const warnings: unknown[] = []
  const warn = console.warn
  console.warn = (...args: unknown[]) => { warnings.push(args) }
  t.teardown(() => { console.warn = warn })
  reader.text.insert(0, 'READER ')
  await waitFor(() => warnings.length > 0, 'the reader to be told its update was refused')
  t.match(String(warnings[0]), /read-only/)
  // a third editor sees only the writer's text: the reader's update was neither stored nor relayed
  const check = yEditor(t, url, 'team/doc', { token: sign({ sub: 'carol', rooms: ['team/doc'] }) })
  await synced(check)
  t.equal(check.text.toString(), 'written')
  writer.text.insert(7, '!')
  await waitFor(() => check.text.toString() === 'written!', 'the writer still writes')
  t.ok(rawLogs().includes('yjs.connection.open'), 'the connections were logged')
  t.notMatch(rawLogs(), /eyJ[A-Za-z0-9_-]+\.eyJ/, 'no token in the logs')
})

t.test('an update over YJS_MAX_UPDATE_BYTES is refused with its limit; the connection stays and nothing is stored', async t => {
  const { url, logs } = await build(t, { YJS_MAX_UPDATE_BYTES: '1024', WS_MAX_PAYLOAD: '65536' })
  const a = yEditor(t, url, 'limits')
  await synced(a)
  const warnings: unknown[] = []
  const warn = console.warn
  console.warn = (...args: unknown[]) => { warnings.push(args) }
  t.teardown(() => { console.warn = warn })
  a.text.insert(0, 'x'.repeat(4000))
  await waitFor(() => warnings.length > 0, 'the refusal')
  t.match(String(warnings[0]), /update: \d+ bytes, over the limit of 1024 \(YJS_MAX_UPDATE_BYTES\)/)
  t.ok(logs().some(l => l.event === 'yjs.update_refused' && l.code === 'update_too_large'))
  // another editor sees none of it, and the refused editor's connection still relays
  const b = yEditor(t, url, 'limits')
  await synced(b)
  b.text.insert(0, 'from b')
  await waitFor(() => a.text.toString().includes('from b'), 'an update from b to reach a')
  t.equal(b.text.toString(), 'from b', 'the large update was neither stored nor relayed')
  t.equal(a.provider.wsconnected, true, 'the connection stayed open')
})

t.test('updates that arrive together are committed together: each checked on its own, a bad one refused before anything is stored, the others stored once and relayed in order', async t => {
  const { app, url, dataDir } = await build(t)
  const a = yEditor(t, url, 'batch-doc')
  await synced(a)
  const source = new Y.Doc()
  const updates: Uint8Array[] = []
  source.on('update', (u: Uint8Array) => updates.push(u))
  source.getMap('m').set('one', 1)
  source.getMap('m').set('two', 2)
  source.getText('t').insert(0, 'three')
  const garbage = Uint8Array.of(1, 200, 7, 7, 7) // not a Yjs update
  const counters = (app.store as unknown as { counters: { commits: number } }).counters
  const commitsBefore = counters.commits
  const outcomes = await app.yjs.documents.use('batch-doc', doc => Promise.allSettled([
    doc.submit(updates[0], null), doc.submit(garbage, null), doc.submit(updates[1], null), doc.submit(updates[2], null), doc.submit(updates[1], null)
  ]))
  t.same(outcomes.map(o => o.status === 'fulfilled' ? o.value : (o.reason as { code: string }).code), [true, 'invalid_update', true, true, false], 'the bad one refused, the repeated one unchanged, the others stored')
  t.equal(counters.commits - commitsBefore, 1, 'the three updates share one store commit')
  await waitFor(async () => a.doc.getText('t').toString() === 'three', 'the editor to receive the batch')
  t.same(a.map.toJSON(), { one: 1, two: 2 })
  // read beside the running server (before the compaction of its shutdown)
  const db = new Database(join(dataDir, 'switchboard.db'), { readonly: true })
  const rows = db.prepare('SELECT data FROM ydoc_update WHERE name = ? ORDER BY id').all('batch-doc') as Array<{ data: Buffer }>
  db.close()
  t.same(rows.map((r, i) => Buffer.compare(r.data, Buffer.from(updates[i]))), [0, 0, 0], 'the three good updates are stored, in order, and nothing else')
})

t.test('a document is unloaded after its last editor leaves, and loads again', async t => {
  const { url, app } = await build(t, { YJS_UNLOAD_AFTER_MS: '50' })
  const a = yEditor(t, url, 'unload-me')
  await synced(a)
  a.text.insert(0, 'kept')
  await waitFor(() => app.yjs.documents.size === 1, 'the document to be loaded')
  const b = yEditor(t, url, 'unload-me')
  await synced(b)
  await converged([a, b])
  a.provider.destroy()
  b.provider.destroy()
  await waitFor(() => app.yjs.documents.size === 0, 'the document to be unloaded')
  const c = yEditor(t, url, 'unload-me')
  await synced(c)
  t.equal(c.text.toString(), 'kept')
  const doc = new Y.Doc()
  Y.applyUpdate(doc, Y.encodeStateAsUpdate(c.doc))
  t.equal(doc.getText('t').toString(), 'kept')
})

t.test('YJS_MAX_DOCUMENT_BYTES refuses the update that would pass it; over YJS_UPDATES_PER_SECOND the provider is closed with 1013 and resyncs, losing nothing', async t => {
  const { url } = await build(t, { YJS_MAX_DOCUMENT_BYTES: '2048', YJS_UPDATES_PER_SECOND: '5' })
  const warnings: unknown[] = []
  const warn = console.warn
  console.warn = (...args: unknown[]) => { warnings.push(args) }
  t.teardown(() => { console.warn = warn })

  const a = yEditor(t, url, 'size')
  await synced(a)
  a.text.insert(0, 'y'.repeat(1500))
  const b = yEditor(t, url, 'size')
  await synced(b)
  await converged([a, b])
  a.text.insert(0, 'z'.repeat(1000))
  await waitFor(() => warnings.length > 0, 'the refusal')
  t.match(String(warnings[0]), /document: \d+ bytes with this update, over the limit of 2048 \(YJS_MAX_DOCUMENT_BYTES\)/)
  t.equal(b.text.length, 1500, 'the update over the document limit was not relayed')

  const c = yEditor(t, url, 'rate')
  const d = yEditor(t, url, 'rate')
  await synced(c)
  await synced(d)
  const codes: number[] = []
  c.provider.on('connection-close', (event: { code: number } | null) => { if (event) codes.push(event.code) })
  for (let i = 0; i < 40; i++) c.map.set(`k${i}`, i)
  await waitFor(() => codes.includes(1013), 'the connection to be closed for its rate')
  await converged([c, d], 'the editors to converge after the provider resynced', 20000)
  t.equal(d.map.size, 40, 'every update arrived, through the resync')

  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /switchboard_yjs_updates_total\{outcome="stored"\} \d+/)
  t.match(metrics, /switchboard_yjs_updates_total\{outcome="rate_limited"\} \d+/)
  t.match(metrics, /switchboard_yjs_updates_total\{outcome="document_too_large"\} 1/)
})

t.test('a document whose stored snapshot Yjs cannot apply (stored by an earlier version) still loads without it, with one logged error', async t => {
  const { url, app, dataDir, logs } = await build(t)
  const good = new Y.Doc()
  good.getText('t').insert(0, 'kept')
  const db = new Database(join(dataDir, 'switchboard.db'))
  db.prepare('INSERT INTO ydoc_snapshot (name, data, up_to) VALUES (?, ?, 0)').run('broken', Buffer.from([0xff, 0xff, 0xff, 0x01]))
  db.prepare('INSERT INTO ydoc_update (name, data) VALUES (?, ?)').run('broken', Buffer.from(Y.encodeStateAsUpdate(good)))
  db.close()
  const editor = yEditor(t, url, 'broken')
  await synced(editor)
  await waitFor(() => editor.text.toString() === 'kept', 'the good update to reach the editor')
  t.equal(app.yjs.documents.size, 1, 'the document is loaded')
  const skipped = logs().filter(l => l.event === 'yjs.update_skipped' && l.doc === 'broken')
  t.equal(skipped.length, 1, 'one error names the skipped part')
  t.equal(skipped[0]?.updateId, 'snapshot')
  editor.text.insert(4, '!')
  const check = new Database(join(dataDir, 'switchboard.db'), { readonly: true })
  t.teardown(() => check.close())
  const count = () => (check.prepare('SELECT count(*) AS n FROM ydoc_update WHERE name = ?').get('broken') as { n: number }).n
  await waitFor(() => count() === 2, 'the new edit to be stored')
  const res = await fetch(`${url}/api/docs/broken?types=t:text`)
  t.same((await res.json() as { roots: unknown }).roots, { t: 'kept!' }, 'read back over HTTP')
})

t.test('a document that cannot be read leaves nothing in memory; the connection is closed with 1011 and the document works once the store does', async t => {
  const { url, app, dataDir, logs } = await build(t)
  const db = new Database(join(dataDir, 'switchboard.db'))
  t.teardown(() => db.close())
  db.exec('ALTER TABLE ydoc_update RENAME TO ydoc_update_away')
  const broken = yEditor(t, url, 'unreadable')
  const codes: number[] = []
  broken.provider.on('connection-close', (event: { code: number } | null) => { if (event) codes.push(event.code) })
  await waitFor(() => codes.includes(1011), 'the connection to be closed with 1011')
  broken.provider.disconnect()
  t.equal(app.yjs.documents.size, 0, 'no half-loaded document kept')
  t.ok(logs().some(l => l.event === 'yjs.load_failed' && l.doc === 'unreadable'))
  db.exec('ALTER TABLE ydoc_update_away RENAME TO ydoc_update')
  const fine = yEditor(t, url, 'unreadable')
  await synced(fine)
  t.equal(app.yjs.documents.size, 1)
})

t.test('documents kept by an earlier version in DATA_DIR/docs.sqlite are imported into the store once, and that file is renamed, not deleted', async t => {
  const dataDir = tempDir(t)
  const before = new Y.Doc()
  before.getText('t').insert(0, 'from the old file')
  const legacy = new Database(join(dataDir, 'docs.sqlite'))
  legacy.pragma('journal_mode = WAL')
  legacy.exec(`CREATE TABLE ydoc_snapshot (name TEXT PRIMARY KEY, data BLOB NOT NULL, up_to INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE ydoc_update (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, data BLOB NOT NULL);`)
  legacy.prepare('INSERT INTO ydoc_snapshot (name, data, up_to) VALUES (?, ?, 0)').run('old-doc', Buffer.from(Y.encodeStateAsUpdate(before)))
  const stateVector = Y.encodeStateVector(before)
  before.getText('t').insert(0, '> ')
  legacy.prepare('INSERT INTO ydoc_update (name, data) VALUES (?, ?)').run('old-doc', Buffer.from(Y.encodeStateAsUpdate(before, stateVector)))
  legacy.close()

  const first = await build(t, {}, { dataDir })
  const res = await fetch(`${first.url}/api/docs/old-doc?types=t:text`)
  t.same((await res.json() as { roots: unknown }).roots, { t: '> from the old file' }, 'the document reads as it was')
  const imported = first.logs().filter(l => l.event === 'store.documents_imported')
  t.equal(imported.length, 1, 'the import is logged')
  t.match(imported[0], { snapshots: 1, updates: 1 })
  t.notOk(existsSync(join(dataDir, 'docs.sqlite')), 'docs.sqlite is no longer read')
  t.ok(existsSync(join(dataDir, 'docs.sqlite.imported')), 'it is kept as docs.sqlite.imported')
  await first.app.close()

  const second = await build(t, {}, { dataDir })
  const again = await fetch(`${second.url}/api/docs/old-doc?types=t:text`)
  t.same((await again.json() as { roots: unknown }).roots, { t: '> from the old file' }, 'after a restart, from the store')
  t.equal(second.logs().filter(l => l.event === 'store.documents_imported').length, 0, 'imported once')
})
