// What a Hocuspocus socket may hold before it authenticates, and that every
// document it authenticated unloads once it is gone (issue 26, rows 5 and 6).
import t, { type Test } from 'tap'
import * as Y from 'yjs'
import { build, waitFor } from './support/helper.js'
import { hocuspocus, syncMessage, SyncSub, type Closed, type DoorConnection, type HocuspocusConnection } from './support/doors.js'
import { documentsInMemory } from './support/observation.js'

/** The close, or null when the connection is still open after `ms`. */
async function closedWithin (conn: DoorConnection, ms: number): Promise<Closed | null> {
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([conn.closed, new Promise<null>(resolve => { timer = setTimeout(resolve, ms, null) })])
  clearTimeout(timer)
  return closed
}

/** A Hocuspocus connection with no document authenticated, closed at teardown. */
async function unauthenticated (t: Test, server: { url: string, port: number }): Promise<HocuspocusConnection> {
  const conn = await hocuspocus.open(server, { setUp: false }) as HocuspocusConnection
  t.teardown(() => conn.close())
  return conn
}

/** A sync update of about `bytes` for the document, as a provider sends it before its Auth is answered. */
function updateOf (bytes: number): Uint8Array {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, 'q'.repeat(bytes))
  return syncMessage(SyncSub.update, Y.encodeStateAsUpdate(doc))
}

t.test('a socket that never authenticates is closed with 1008 "authentication timeout" after AUTH_TIMEOUT_MS; one that did stays (row 5)', async t => {
  const server = await build(t, { AUTH_TIMEOUT_MS: '1000' })
  const authenticated = await hocuspocus.open(server) as HocuspocusConnection
  t.teardown(() => authenticated.close())
  const silent = await unauthenticated(t, server)
  // it sends a document's messages, never the document's Auth message
  silent.sendFor('never-authenticated', syncMessage(SyncSub.step1, Uint8Array.of(0)))
  const closed = await closedWithin(silent, 15000)
  t.equal(closed?.code, 1008, `closed with 1008 (got ${JSON.stringify(closed)})`)
  t.match(closed?.reason, /authentication timeout/)
  await authenticated.roundTrip()
  t.ok(authenticated.open, 'the socket that authenticated its document is still served')
})

t.test('messages queued before Auth are bounded: the 65th for one document gets permission denied for that document, the socket stays (row 5)', async t => {
  const server = await build(t)
  const conn = await hocuspocus.open(server) as HocuspocusConnection
  t.teardown(() => conn.close())
  const pending = 'queued-by-count'
  const denied = () => conn.frames.some(f => f.doc === pending && conn.refusalOf(f) !== null)
  for (let i = 0; i < 64; i++) conn.sendFor(pending, syncMessage(SyncSub.step1, Uint8Array.of(0)))
  await conn.roundTrip()
  t.notOk(denied(), '64 queued messages are taken')
  conn.sendFor(pending, syncMessage(SyncSub.step1, Uint8Array.of(0)))
  await conn.next(f => f.doc === pending && conn.refusalOf(f) !== null, 'permission denied for the document').catch(() => {})
  t.ok(denied(), 'the 65th gets permission denied for that document')
  await conn.alive()
  t.ok(conn.open, 'the socket stays open')
})

t.test('messages queued before Auth are bounded in bytes: past WS_MAX_PAYLOAD in all for one document, permission denied for it, the socket stays (row 5)', async t => {
  const server = await build(t, { WS_MAX_PAYLOAD: '4096' })
  const conn = await hocuspocus.open(server) as HocuspocusConnection
  t.teardown(() => conn.close())
  const pending = 'queued-by-bytes'
  const refusal = () => conn.frames.find(f => f.doc === pending && conn.refusalOf(f) !== null)
  conn.sendFor(pending, updateOf(1500))
  conn.sendFor(pending, updateOf(1500))
  await conn.roundTrip()
  t.notOk(refusal(), 'two messages of 1,500 bytes are taken (3,000 of 4,096)')
  conn.sendFor(pending, updateOf(1500))
  await conn.next(f => f.doc === pending && conn.refusalOf(f) !== null, 'permission denied for the document').catch(() => {})
  t.ok(refusal(), 'the third (4,500 bytes in all) gets permission denied for that document')
  if (refusal()) t.match(conn.refusalOf(refusal())?.message, /4096/, 'naming the limit')
  await conn.alive()
  t.ok(conn.open, 'the socket stays open')
})

t.test('two Auth messages per document, then close: every document unloads after YJS_UNLOAD_AFTER_MS (row 6)', async t => {
  const server = await build(t, { YJS_UNLOAD_AFTER_MS: '100', YJS_MAX_DOCUMENTS_PER_CONNECTION: '20' })
  for (let socket = 0; socket < 3; socket++) {
    const conn = await hocuspocus.open(server, { setUp: false }) as HocuspocusConnection
    const names = Array.from({ length: 20 }, (_, i) => `twice-${socket}-${i}`)
    // both Auth messages leave before the first is answered, as a provider that re-sends on reconnect does
    const answers = await Promise.allSettled(names.flatMap(name => [conn.authenticate(name, ''), conn.authenticate(name, '')]))
    t.ok(answers.some(a => a.status === 'fulfilled'), `socket ${socket}: its documents were authenticated`)
    await conn.close()
  }
  // the wait ends when they are all gone, or at its bound; the assertion says how many stayed
  await waitFor(async () => await documentsInMemory(server) === 0, 'every document to unload', 15000, 100).catch(() => {})
  t.equal(await documentsInMemory(server), 0, '/api/status yjs.documents is back to 0 (of 60 documents authenticated twice)')
})
