import t from 'tap'
import * as Y from 'yjs'
import WebSocket from 'ws'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { createSigner } from 'fast-jwt'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { build, waitFor, type TestContext } from './support/helper.js'
import { converged, stateOf, synced, yEditor } from './support/yjs-editors.js'

const run = promisify(execFile)
const SECRET = 'yjs-hocus-secret-that-is-long-enough-0123456789'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)

interface HocusEditor { doc: Y.Doc, provider: HocuspocusProvider, text: Y.Text, map: Y.Map<unknown> }

/** A real HocuspocusProvider on `base`, destroyed at teardown. */
function hEditor (t: TestContext, base: string, name: string, token?: string, websocketProvider?: HocuspocusProviderWebsocket): HocusEditor {
  const doc = new Y.Doc()
  const provider = new HocuspocusProvider({
    ...(websocketProvider ? { websocketProvider } : { url: `${base.replace(/^http/, 'ws')}/collab`, WebSocketPolyfill: WebSocket as any }),
    name,
    document: doc,
    token: token ?? null
  })
  if (websocketProvider) provider.attach()
  t.teardown(() => {
    provider.destroy()
    doc.destroy()
  })
  return { doc, provider, text: doc.getText('t'), map: doc.getMap('m') }
}

/** What the store holds for a document, replayed into a fresh Y.Doc (read with a second SQLite connection). */
function stored (dataDir: string, name: string): Y.Doc {
  const db = new Database(join(dataDir, 'switchboard.db'), { readonly: true })
  const doc = new Y.Doc()
  const snap = db.prepare('SELECT data FROM ydoc_snapshot WHERE name = ?').get(name) as { data: Buffer } | undefined
  if (snap) Y.applyUpdate(doc, snap.data)
  for (const row of db.prepare('SELECT data FROM ydoc_update WHERE name = ? ORDER BY id').all(name) as Array<{ data: Buffer }>) Y.applyUpdate(doc, row.data)
  db.close()
  return doc
}

t.test('Hocuspocus editors and a y-websocket editor on one name converge; "saved" only once committed', async t => {
  const { url, dataDir } = await build(t)
  const h1 = hEditor(t, url, 'shared')
  const h2 = hEditor(t, url, 'shared')
  const y = yEditor(t, url, 'shared')
  await waitFor(() => h1.provider.synced && h2.provider.synced && !h1.provider.hasUnsyncedChanges, 'the Hocuspocus providers to sync')
  await synced(y)

  h1.text.insert(0, 'hocus ')
  h2.map.set('from', 'h2')
  y.text.insert(0, 'ywebsocket ')
  y.map.set('y', true)
  await converged([h1, h2, y])
  t.same(h1.map.toJSON(), { from: 'h2', y: true })

  // each SyncStatus(1) is sent after the commit: once the counter is back to 0, the store has the edit
  const acked: string[] = []
  for (let i = 0; i < 10; i++) {
    h1.text.insert(h1.text.length, `${i}`)
    await waitFor(() => !h1.provider.hasUnsyncedChanges, 'the edit to be acknowledged')
    acked.push(stored(dataDir, 'shared').getText('t').toString())
  }
  for (let i = 0; i < 10; i++) t.ok(acked[i].endsWith('0123456789'.slice(0, i + 1)), `edit ${i} was in the store when it was acknowledged`)
  await converged([h1, h2, y])
  t.ok(stateOf(stored(dataDir, 'shared')).equals(stateOf(h1.doc)), 'the store holds the editors\' document byte for byte')
})

t.test('Hocuspocus: offline edits are merged when the socket comes back', async t => {
  const { url } = await build(t)
  const socketA = new HocuspocusProviderWebsocket({ url: `${url.replace(/^http/, 'ws')}/collab`, WebSocketPolyfill: WebSocket as any })
  t.teardown(() => socketA.destroy())
  const a = hEditor(t, url, 'offline', undefined, socketA)
  const b = hEditor(t, url, 'offline')
  await waitFor(() => a.provider.synced && b.provider.synced, 'both to sync')
  a.text.insert(0, 'base')
  await converged([a, b])
  socketA.disconnect()
  // connect() on a socket still closing is a no-op in the provider: wait for the close
  await waitFor(() => socketA.status === 'disconnected', 'the socket to close')
  a.text.insert(4, ' a-offline')
  b.text.insert(0, 'b-online ')
  await waitFor(() => b.text.toString().startsWith('b-online'), 'b to edit')
  await socketA.connect()
  await converged([a, b], 'the offline edit to be merged', 20000)
  t.equal(a.text.toString(), 'b-online base a-offline')
})

t.test('Hocuspocus auth: a bad token is denied, a read-only token syncs but its updates are refused, documents per connection are limited', async t => {
  const { url } = await build(t, { AUTH_SECRET: SECRET, YJS_MAX_DOCUMENTS_PER_CONNECTION: '2' })
  const denied = hEditor(t, url, 'team/doc', 'not-a-token')
  const reason = await new Promise<string>(resolve => denied.provider.on('authenticationFailed', ({ reason }: { reason: string }) => resolve(reason)))
  t.match(reason, /^token: /)
  const outsider = hEditor(t, url, 'team/doc', sign({ sub: 'eve', rooms: ['other/*'] }))
  t.match(await new Promise<string>(resolve => outsider.provider.on('authenticationFailed', ({ reason }: { reason: string }) => resolve(reason))), /rooms claim does not include team\/doc/)

  const writer = hEditor(t, url, 'team/doc', sign({ sub: 'alice', rooms: ['team/*'] }))
  const reader = hEditor(t, url, 'team/doc', sign({ sub: 'bob', rooms: ['read:team/*'] }))
  await waitFor(() => writer.provider.synced && reader.provider.synced, 'both to sync')
  t.equal(writer.provider.authorizedScope, 'read-write')
  t.equal(reader.provider.authorizedScope, 'readonly')
  writer.text.insert(0, 'written')
  await waitFor(() => reader.text.toString() === 'written', 'the reader to receive')
  reader.text.insert(0, 'READER ')
  await waitFor(() => reader.provider.unsyncedChanges === 1, 'the reader\'s update to be pending')
  const check = hEditor(t, url, 'team/doc', sign({ sub: 'carol', rooms: ['team/doc'] }))
  await waitFor(() => check.provider.synced, 'a third editor to sync')
  t.equal(check.text.toString(), 'written', 'the read-only update was neither stored nor relayed')
  t.equal(reader.provider.unsyncedChanges, 1, 'never reported saved')

  // three documents on one socket, at most two per connection
  const socket = new HocuspocusProviderWebsocket({ url: `${url.replace(/^http/, 'ws')}/collab`, WebSocketPolyfill: WebSocket as any })
  t.teardown(() => socket.destroy())
  const token = sign({ sub: 'dave' })
  const one = hEditor(t, url, 'mux/1', token, socket)
  const two = hEditor(t, url, 'mux/2', token, socket)
  await waitFor(() => one.provider.synced && two.provider.synced, 'two documents on one socket')
  const three = hEditor(t, url, 'mux/3', token, socket)
  t.match(await new Promise<string>(resolve => three.provider.on('authenticationFailed', ({ reason }: { reason: string }) => resolve(reason))), /documents: at most 2 per connection \(YJS_MAX_DOCUMENTS_PER_CONNECTION\)/)
  one.text.insert(0, 'still works')
  await waitFor(() => !one.provider.hasUnsyncedChanges, 'the first document to keep working')
})

t.test('examples/collab/editor.mjs: its two editors see each other\'s edits', async t => {
  const { url } = await build(t)
  const { stdout } = await run(process.execPath, [fileURLToPath(new URL('../../examples/collab/editor.mjs', import.meta.url)), url.replace(/^http/, 'ws'), 'example/doc'])
  t.match(stdout, /y-websocket sees: \[y-websocket [^\]]+\] {2}\{ lastEditor: 'hocuspocus' \}/)
  t.match(stdout, /hocuspocus sees: {2}\[y-websocket [^\]]+\] {2}\{ lastEditor: 'hocuspocus' \}/)
})
