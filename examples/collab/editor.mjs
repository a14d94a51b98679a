// Two collaborative editors on one document, one per provider, against a
// running Switchboard (npm start): a y-websocket editor and a Hocuspocus one.
//   node examples/collab/editor.mjs [ws://127.0.0.1:5001] [document]
// In auth mode pass TOKEN=<jwt> (its `rooms` claim must include the document).
// In a browser, drop the `ws` polyfill: both providers use the global WebSocket.
import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider } from '@hocuspocus/provider'

const base = process.argv[2] ?? 'ws://127.0.0.1:5001'
const name = process.argv[3] ?? 'example/notes'
const token = process.env.TOKEN

const docA = new Y.Doc()
const a = new WebsocketProvider(`${base}/yjs`, name, docA, { WebSocketPolyfill: WebSocket, params: token ? { token } : {} })
const docB = new Y.Doc()
const b = new HocuspocusProvider({ url: `${base}/collab`, name, document: docB, token: token ?? null, WebSocketPolyfill: WebSocket })

await Promise.all([
  new Promise(resolve => a.once('sync', resolve)),
  new Promise(resolve => b.on('synced', resolve))
])
docA.getText('t').insert(0, `[y-websocket ${new Date().toISOString()}] `)
docB.getMap('m').set('lastEditor', 'hocuspocus')
// "saved" in Hocuspocus means committed to the server's store
await new Promise(resolve => { const check = () => b.hasUnsyncedChanges ? setTimeout(check, 20) : resolve(); check() })
await new Promise(resolve => setTimeout(resolve, 200))
console.log('y-websocket sees:', docA.getText('t').toString(), docA.getMap('m').toJSON())
console.log('hocuspocus sees: ', docB.getText('t').toString(), docB.getMap('m').toJSON())
a.destroy()
b.destroy()
// the Hocuspocus provider's retry timers outlive destroy() in Node: end here
process.exit(0)
