/**
 * Memory of the Yjs documents registry (plugins/yjs): heap per open document
 * and heap after 10,000 documents were opened, edited and closed:
 *   npm run bench:yjs-memory [-- --open 1000 --cycles 10000 --text 1024]
 * Straight on the registry and the SQLite store (no sockets): the
 * figure is what the server holds per document, not per connection.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pino from 'pino'
import * as Y from 'yjs'
import type { FastifyBaseLogger } from 'fastify'
import { Documents, type Peer } from '../plugins/yjs/documents.js'
import { SqliteStore } from '../plugins/store/sqlite.js'

const { values } = parseArgs({
  options: {
    open: { type: 'string', default: '1000' },
    cycles: { type: 'string', default: '10000' },
    text: { type: 'string', default: '1024' }
  }
})
const OPEN = Number(values.open)
const CYCLES = Number(values.cycles)
const TEXT = Number(values.text)

const gc = (globalThis as { gc?: () => void }).gc
if (!gc) throw new Error('run with node --expose-gc')
async function heap (): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc!()
    await new Promise(resolve => setImmediate(resolve))
  }
  return process.memoryUsage().heapUsed
}

/** One update that inserts `TEXT` characters into the text `t`, as an editor would send it. */
function textUpdate (): Uint8Array {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, 'x'.repeat(TEXT))
  return Y.encodeStateAsUpdate(doc)
}

const dir = mkdtempSync(join(tmpdir(), 'yjs-memory-'))
const log = pino({ level: 'silent' })
const store = SqliteStore.open({ dataDir: dir, groupCommit: true, inboxMax: 100, inboxTtlMs: 86400000, log })
const documents = new Documents({
  store: store.documents,
  log: log as unknown as FastifyBaseLogger,
  maxUpdateBytes: 1 << 20,
  maxDocumentBytes: 1 << 22,
  unloadAfterMs: 0,
  compactAfterUpdates: 200
})
const peer = (): Peer => ({ send () {}, readOnly: false })

async function openEdited (name: string, p: Peer) {
  const doc = await documents.open(name, p)
  await doc.submit(textUpdate(), null)
  return doc
}

const base = await heap()
const held = []
for (let i = 0; i < OPEN; i++) {
  const p = peer()
  held.push({ doc: await openEdited(`open-${i}`, p), p })
}
const withOpen = await heap()
for (const { doc, p } of held) documents.leave(doc, p)
held.length = 0
while (documents.size > 0) await new Promise(resolve => setTimeout(resolve, 10))

const started = Date.now()
for (let i = 0; i < CYCLES; i += 100) {
  const batch = []
  for (let j = i; j < Math.min(CYCLES, i + 100); j++) {
    const p = peer()
    batch.push(openEdited(`cycle-${j}`, p).then(doc => ({ doc, p })))
  }
  for (const { doc, p } of await Promise.all(batch)) documents.leave(doc, p)
}
while (documents.size > 0) await new Promise(resolve => setTimeout(resolve, 10))
const after = await heap()
await documents.close()
await store.close()
rmSync(dir, { recursive: true, force: true })

const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`
console.log(JSON.stringify({
  node: process.version,
  open: OPEN,
  textChars: TEXT,
  heapPerOpenDocument: kb((withOpen - base) / OPEN),
  cycles: CYCLES,
  cyclesMs: Date.now() - started,
  documentsInMemoryAfter: documents.size,
  heapGrowthAfterCycles: kb(after - base)
}, null, 2))
