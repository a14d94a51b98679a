import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import type { TestContext } from './helper.js'
import { waitFor } from './helper.js'

/** A y-websocket editor: a Y.Doc with a text `t` and a map `m`, synced by the real WebsocketProvider. */
export interface Editor {
  doc: Y.Doc
  provider: WebsocketProvider
  text: Y.Text
  map: Y.Map<unknown>
}

/** A real WebsocketProvider on `base` (http or ws URL of the server), destroyed at teardown. BroadcastChannel off: only the server may sync. */
export function yEditor (t: TestContext, base: string, name: string, params: Record<string, string> = {}): Editor {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(`${base.replace(/^http/, 'ws')}/yjs`, name, doc, {
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    disableBc: true,
    params
  })
  t.teardown(() => {
    provider.destroy()
    doc.destroy()
  })
  return { doc, provider, text: doc.getText('t'), map: doc.getMap('m') }
}

/** Resolves once the provider has received the server's step 2 on its current socket. */
export async function synced (editor: Editor, what = 'the provider to sync', timeoutMs = Infinity): Promise<void> {
  await waitFor(() => editor.provider.synced, what, timeoutMs)
}

/** The full state of a document as one update: equal bytes = equal documents. */
export function stateOf (doc: Y.Doc): Buffer {
  return Buffer.from(Y.encodeStateAsUpdate(doc))
}

/** Resolves once every editor holds the same state (state vectors and full updates byte for byte). */
export async function converged (editors: Array<{ doc: Y.Doc }>, what = 'the editors to converge', timeoutMs = Infinity): Promise<void> {
  await waitFor(() => {
    const first = stateOf(editors[0].doc)
    const sv = Buffer.from(Y.encodeStateVector(editors[0].doc))
    return editors.every(e => stateOf(e.doc).equals(first) && Buffer.from(Y.encodeStateVector(e.doc)).equals(sv))
  }, what, timeoutMs, 20)
}

/** Two editors of one document on `base`, both synced. */
export async function syncedPair (t: TestContext, base: string, name: string, params: Record<string, string> = {}): Promise<[Editor, Editor]> {
  const a = yEditor(t, base, name, params)
  const b = yEditor(t, base, name, params)
  await synced(a)
  await synced(b)
  return [a, b]
}
