/* global location, document, window */
// A plain <textarea> bound to a Y.Text through the y-websocket provider.
// Bundle it for the browser:
//   npx esbuild examples/collab/textarea.js --bundle --format=esm --outfile=examples/collab/textarea.bundle.js
// then serve examples/collab/ from an origin listed in CORS_ORIGINS and open textarea.html.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const query = new URLSearchParams(location.search)
const server = query.get('server') ?? 'ws://127.0.0.1:5001'
const name = query.get('doc') ?? 'example/notes'
const token = query.get('token')

const doc = new Y.Doc()
const text = doc.getText('t')
const provider = new WebsocketProvider(`${server}/yjs`, name, doc, { params: token ? { token } : {} })
const area = document.getElementById('editor')
const status = document.getElementById('status')
let state = 'connecting'
provider.on('status', ({ status: s }) => { state = s; status.textContent = s })
provider.on('sync', synced => { if (synced) status.textContent = 'synced' })
// a socket closed before it opened: the browser hides why (a refused upgrade is code 1006), so say what it usually is
provider.on('connection-close', event => {
  if (state !== 'connecting') return
  status.textContent = `cannot connect to ${server} (close code ${event?.code ?? 'none'}); retrying. ` +
    `Is the server running, and is this page's origin (${location.origin}) in its CORS_ORIGINS?`
})

// local typing: the smallest change between the text and the textarea, as one Yjs transaction
area.addEventListener('input', () => {
  const before = text.toString()
  const after = area.value
  let start = 0
  while (start < before.length && start < after.length && before[start] === after[start]) start++
  let end = 0
  while (end < before.length - start && end < after.length - start && before[before.length - 1 - end] === after[after.length - 1 - end]) end++
  doc.transact(() => {
    if (before.length - start - end > 0) text.delete(start, before.length - start - end)
    if (after.length - start - end > 0) text.insert(start, after.slice(start, after.length - end))
  }, 'textarea')
})

// remote edits: the textarea follows, the caret stays where it was relative to the text around it
text.observe((_event, transaction) => {
  if (transaction.origin === 'textarea') return
  area.value = text.toString()
})
let caret = null
const remember = () => { caret = [Y.createRelativePositionFromTypeIndex(text, area.selectionStart), Y.createRelativePositionFromTypeIndex(text, area.selectionEnd)] }
for (const type of ['keyup', 'mouseup', 'input', 'focus']) area.addEventListener(type, remember)
doc.on('afterTransaction', transaction => {
  if (transaction.origin === 'textarea' || !caret || document.activeElement !== area) return
  const [from, to] = caret.map(rel => Y.createAbsolutePositionFromRelativePosition(rel, doc)?.index ?? 0)
  area.setSelectionRange(from, to)
})
window.collab = { doc, text, provider }
