import t from 'tap'
import WebSocket from 'ws'
import * as Y14 from '@y/y'
import { WebsocketProvider, messageSync } from '@y/websocket'
import * as decoding from 'lib0/decoding'
import { build, waitFor, type TestContext } from './support/helper.js'
import { converged, synced, syncedPair, yEditor } from './support/yjs-editors.js'

/**
 * An editor on the y-websocket 4 provider (`@y/websocket`, over `@y/y` 14).
 * Its confirmation rule: a local edit is synced once the server has sent its
 * content back (in an update or a step 2). Provider versions with
 * `syncStatus` compute it themselves; for the published ones without it, the
 * same rule is checked here with `@y/y`'s own content ids.
 */
interface Editor4 {
  doc: Y14.Doc
  provider: WebsocketProvider
  text: ReturnType<Y14.Doc['get']>
  /** Local edits whose content the server has not sent back yet. */
  unconfirmed (): number
}

function editor4 (t: TestContext, base: string, name: string): Editor4 {
  const doc = new Y14.Doc()
  const provider = new WebsocketProvider(`${base.replace(/^http/, 'ws')}/yjs`, name, doc, {
    // Node 20 has no global WebSocket: the provider takes `ws`, as its docs allow
    WebSocketPolyfill: WebSocket as unknown as NonNullable<ConstructorParameters<typeof WebsocketProvider>[3]>['WebSocketPolyfill'],
    disableBc: true
  })
  let local: Array<ReturnType<typeof Y14.createContentIdsFromUpdate>> = []
  doc.on('update', (update: Uint8Array, origin: unknown) => {
    if (origin !== provider) local.push(Y14.createContentIdsFromUpdate(update))
  })
  // what the server sends: every sync update and step 2, seen before the provider reads it
  const handle = provider.messageHandlers[messageSync]
  provider.messageHandlers[messageSync] = (encoder, decoder, p, emitSynced, type) => {
    const peek = decoding.createDecoder(decoder.arr)
    peek.pos = decoder.pos
    const sub = decoding.readVarUint(peek)
    if (sub === 1 || sub === 2) {
      const received = Y14.createContentIdsFromUpdate(decoding.readVarUint8Array(peek))
      local = local.filter(ids => {
        const left = Y14.excludeContentIds(ids, received)
        return !left.inserts.isEmpty() || !left.deletes.isEmpty()
      })
    }
    handle(encoder, decoder, p, emitSynced, type)
  }
  t.teardown(() => {
    provider.destroy()
    doc.destroy()
  })
  return { doc, provider, text: doc.get('t'), unconfirmed: () => local.length }
}

/** The provider's own verdict where it has one (`syncStatus`, 4.0 release candidates), and the content-id rule. */
async function confirmed (e: Editor4, what: string): Promise<void> {
  const status = () => (e.provider as unknown as { syncStatus?: { status: string, localUpdatesSynced: boolean } }).syncStatus
  await waitFor(() => e.provider.synced && e.unconfirmed() === 0 && (status() === undefined || (status()!.status === 'green' && status()!.localUpdatesSynced)), what)
}

t.test('y-websocket 4: each local edit comes back from the server, so the provider counts it synced; a 3.x provider on the same document converges', async t => {
  const { url } = await build(t)
  const a = editor4(t, url, 'v4/doc')
  const b = editor4(t, url, 'v4/doc')
  const old = yEditor(t, url, 'v4/doc')
  await confirmed(a, 'the first 4.x provider to sync')
  await confirmed(b, 'the second 4.x provider to sync')
  await synced(old)

  a.text.insert(0, 'hello ')
  t.equal(a.unconfirmed(), 1, 'the edit waits for the server')
  await confirmed(a, 'the server to send the edit back')
  await waitFor(() => old.text.toString() === 'hello ', 'the 3.x provider to get the edit')

  // concurrent edits from both 4.x providers and the 3.x one: every 4.x edit is confirmed
  for (let i = 0; i < 5; i++) {
    a.text.insert(0, `a${i}`)
    b.text.insert(0, `b${i}`)
    old.text.insert(0, `o${i}`)
  }
  await confirmed(a, 'the edits of a to come back')
  await confirmed(b, 'the edits of b to come back')
  await waitFor(() => a.text.toString() === old.text.toString() && b.text.toString() === old.text.toString(), 'the three providers to converge')
  t.equal(old.text.toString().length, 6 + 3 * 10, 'every insertion kept')
  t.equal(a.unconfirmed(), 0)
  t.equal(b.unconfirmed(), 0)
})

t.test('y-websocket 4: edits made offline are confirmed once uploaded after the reconnect', async t => {
  const { url } = await build(t)
  const a = editor4(t, url, 'v4/offline')
  const old = yEditor(t, url, 'v4/offline')
  await confirmed(a, 'the provider to sync')
  await synced(old)
  a.provider.disconnect()
  a.text.insert(0, 'typed offline')
  t.equal(a.unconfirmed(), 1, 'unconfirmed while offline')
  a.provider.connect()
  await confirmed(a, 'the offline edit to be confirmed after the reconnect')
  await waitFor(() => old.text.toString() === 'typed offline', 'the other provider to get it')
})

t.test('y-websocket 3.x providers get their own edits back harmlessly and converge', async t => {
  const { url } = await build(t)
  const [a, b] = await syncedPair(t, url, 'v3/echo')
  for (let i = 0; i < 10; i++) a.text.insert(a.text.length, `${i}`)
  b.map.set('k', 1)
  await converged([a, b])
  t.equal(a.text.toString(), '0123456789')
  t.same(a.map.toJSON(), { k: 1 })
})
