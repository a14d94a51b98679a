/**
 * The soak: one server under a steady churn of every kind of client, sampled
 * for what leaks.
 *   npm run bench -- --only soak            (3 minutes; --full: 30 minutes)
 *   node dist/bench/soak.js --minutes 3 --sample-sec 15 --population 120
 *
 * One server child process (dist/server.js, SQLite in a temp dir, a Pusher
 * app), pinned to core 0 with this generator on core 1 where `taskset` exists.
 * The generator keeps `--population` sessions open, a quarter of each kind:
 * native /ws (join a room, publish, send a direct message, leave), Pusher
 * protocol 7 (subscribe, ping; events triggered by the real `pusher` SDK),
 * y-websocket (sync, then small edits) and SSE (`GET /sse` on a room). Each
 * session lives 3–12 s, then leaves: one in ten vanishes without a close.
 *
 * Yjs documents are opened and closed, as in an application: editors work on
 * the `--rooms` documents of the current generation, and every `--doc-minutes`
 * (2) a new generation begins, so the last one's documents lose their editors
 * and the server unloads them (`YJS_UNLOAD_AFTER_MS`). A loaded Yjs document
 * keeps a deleted item per edit (its tombstones), on any Yjs server, so a
 * document that never closes grows with its edits; `--doc-minutes 0` measures
 * that case (the same `--rooms` documents for the whole run).
 *
 * Every --sample-sec it records the server's RSS and open file descriptors
 * (/proc), its heap and event-loop p99 (its own /metrics) and the size of its
 * data directory, the Yjs documents in memory, and the current generation's
 * longest text and total size. It passes when the RSS slope over the second
 * half is under 1 MB per 10 minutes, and when, the clients gone, the server's
 * connection gauge is back to 0, its fds back to the count before the first
 * client and no Yjs document is left in memory.
 * Prints one JSON object.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import http from 'node:http'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import type PusherServer from 'pusher'
import { startBenchServer } from './server-process.js'
import { pin } from './pin.js'

const require = createRequire(import.meta.url)
const Sdk = require('pusher') as typeof PusherServer

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '3' },
    'sample-sec': { type: 'string', default: '15' },
    population: { type: 'string', default: '120' },
    rooms: { type: 'string', default: '20' },
    'doc-minutes': { type: 'string', default: '2' }
  }
})
const MINUTES = Number(values.minutes)
const SAMPLE_MS = Number(values['sample-sec']) * 1000
const POPULATION = Number(values.population)
const ROOMS = Number(values.rooms)
const DOC_MS = Number(values['doc-minutes']) * 60000
const APP = { appId: 'soak', key: 'soak-key', secret: 'soak-secret' }
const KINDS = ['native', 'pusher', 'yjs', 'sse'] as const
type Kind = typeof KINDS[number]

export interface SoakSample { atSec: number, rssMb: number, heapMb: number, fds: number, eventLoopP99Ms: number, storeMb: number, connections: number, sessionsOpened: number, yjsDocs: number, docChars?: number, docsKb?: number }

/** Least-squares slope of y over x. */
export function slope (points: Array<[number, number]>): number {
  const n = points.length
  if (n < 2) return 0
  const mx = points.reduce((s, p) => s + p[0], 0) / n
  const my = points.reduce((s, p) => s + p[1], 0) / n
  let num = 0
  let den = 0
  for (const [x, y] of points) {
    num += (x - mx) * (y - my)
    den += (x - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

function fdCount (pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

function rssMb (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? 0 : Number(m[1]) / 1024
}

function dirMb (dir: string): number {
  let bytes = 0
  for (const name of readdirSync(dir)) {
    const s = statSync(join(dir, name))
    bytes += s.isDirectory() ? dirMb(join(dir, name)) * 1024 * 1024 : s.size
  }
  return bytes / 1024 / 1024
}

/** GET without keep-alive: the sampler holds no socket of the server open between samples. */
function getText (port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', c => { body += c })
      res.on('end', () => resolve(body))
    }).on('error', reject)
  })
}

/** GET of a binary body, without keep-alive. */
function getBytes (port: number, path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve(Buffer.concat(chunks)))
    }).on('error', reject)
  })
}

function metric (text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text)
  return m === null ? NaN : Number(m[1])
}

const server = await startBenchServer('soak', { PUSHER_APPS_FILE: '', PUSHER_APP_ID: APP.appId, PUSHER_APP_KEY: APP.key, PUSHER_APP_SECRET: APP.secret, WS_MESSAGES_PER_SECOND: '1000000' })
pin(server.pid, 0)
pin(process.pid, 1)
const sdk = new Sdk({ ...APP, host: '127.0.0.1', port: String(server.port), useTLS: false })
const base = `127.0.0.1:${server.port}`
const room = () => `soak-${Math.floor(Math.random() * ROOMS)}`
const soakStart = Date.now()
/** The documents' generation now: 0 for the whole run with `--doc-minutes 0`. */
const generation = (): number => DOC_MS > 0 ? Math.floor((Date.now() - soakStart) / DOC_MS) : 0
/** A document of the current generation. */
const document = (i = Math.floor(Math.random() * ROOMS)): string => `soak-g${generation()}-${i}`
/** The documents editors have opened, by generation: the sampler reads only these (a read loads a document). */
const edited = new Map<number, Set<string>>()
let opened = 0
let failures = 0
const state = { running: true }
const live = new Set<Promise<void>>()

/** One session of a kind: open, work every second for its lifetime, leave (or vanish). */
async function session (kind: Kind): Promise<void> {
  const id = `s${opened++}`
  const lifetimeMs = 3000 + Math.random() * 9000
  const vanish = Math.random() < 0.1
  const name = kind === 'yjs' ? document() : room()
  if (kind === 'yjs') {
    const gen = generation()
    edited.set(gen, (edited.get(gen) ?? new Set()).add(name))
  }
  if (kind === 'sse') {
    await new Promise<void>(resolve => {
      const req = http.get({ host: '127.0.0.1', port: server.port, path: `/sse?clientId=${id}&rooms=${name}`, agent: false }, res => {
        res.resume()
        res.on('error', () => {})
      })
      req.on('error', () => { failures++; resolve() })
      setTimeout(() => { req.destroy(); resolve() }, lifetimeMs)
    })
    return
  }
  const url = kind === 'native'
    ? `ws://${base}/ws?clientId=${id}`
    : kind === 'pusher' ? `ws://${base}/app/${APP.key}?protocol=7` : `ws://${base}/yjs/${name}`
  const ws = new WebSocket(url)
  ws.on('error', () => {})
  const ok = await new Promise<boolean>(resolve => { ws.once('open', () => resolve(true)); ws.once('error', () => resolve(false)) })
  if (!ok) { failures++; return }
  const doc = kind === 'yjs' ? new Y.Doc() : undefined
  if (kind === 'native') ws.send(JSON.stringify({ type: 'join', room: name }))
  if (kind === 'pusher') ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: name } }))
  if (doc !== undefined) {
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, 0)
    syncProtocol.writeSyncStep1(e, doc)
    ws.send(encoding.toUint8Array(e))
    doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin === ws) return // the server's own update: it has it
      const u = encoding.createEncoder()
      encoding.writeVarUint(u, 0)
      syncProtocol.writeUpdate(u, update)
      if (ws.readyState === WebSocket.OPEN) ws.send(encoding.toUint8Array(u))
    })
    // as a y-websocket editor does: apply the server's sync messages (its state, then everyone's updates), so the
    // editor sees the whole text and its deletions below keep the document short; awareness frames are ignored
    ws.on('message', (data: Buffer) => {
      const decoder = decoding.createDecoder(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
      if (decoding.readVarUint(decoder) !== 0) return
      const reply = encoding.createEncoder()
      encoding.writeVarUint(reply, 0)
      syncProtocol.readSyncMessage(decoder, reply, doc, ws)
      if (encoding.length(reply) > 1 && ws.readyState === WebSocket.OPEN) ws.send(encoding.toUint8Array(reply))
    })
  }
  const work = setInterval(() => {
    if (ws.readyState !== WebSocket.OPEN) return
    if (kind === 'native') {
      ws.send(JSON.stringify({ type: 'publish', room: name, data: { n: opened } }))
      ws.send(JSON.stringify({ type: 'send', to: `s${Math.floor(Math.random() * opened)}`, text: 'hi' }))
    } else if (kind === 'pusher') {
      ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }))
      sdk.trigger(name, 'tick', { n: opened }).catch(() => { failures++ })
    } else if (doc !== undefined) {
      const text = doc.getText('t')
      // edits that keep the text short: the document's text stays bounded as it would in a real editor (this
      // editor has the server's text, applied above); what still grows is Yjs's own record of the edits (a deleted
      // item per edit, kept while the document is loaded), as on any Yjs server
      if (text.length > 64) text.delete(0, text.length - 32)
      text.insert(text.length, 'abcd')
    }
  }, 1000)
  await new Promise(resolve => setTimeout(resolve, lifetimeMs))
  clearInterval(work)
  if (vanish) ws.terminate()
  else ws.close()
  doc?.destroy()
}

/** Keeps the population at its size until the end. */
async function churn (kind: Kind): Promise<void> {
  while (state.running) {
    const p = session(kind).catch(() => { failures++ })
    live.add(p)
    await p
    live.delete(p)
  }
}

/**
 * The current generation's edited documents as the server holds them (`GET /api/v1/docs/:doc/update`): the longest text,
 * which the editors keep short, and the size of all of them, which grows with every edit while the generation lasts
 * (Yjs keeps a deleted item per edit and a record per client).
 */
async function documentSizes (): Promise<{ docChars: number, docsKb: number }> {
  let docChars = 0
  let bytes = 0
  for (const name of edited.get(generation()) ?? []) {
    const update = await getBytes(server.port, `/api/v1/docs/${name}/update`)
    const doc = new Y.Doc()
    Y.applyUpdate(doc, update)
    docChars = Math.max(docChars, doc.getText('t').length)
    bytes += update.length
    doc.destroy()
  }
  return { docChars, docsKb: Number((bytes / 1024).toFixed(1)) }
}

/** One sample; `docs`: read the documents too (not once the clients are gone, when reading would load them again). */
async function sample (startedAt: number, docs = true): Promise<SoakSample> {
  const text = await getText(server.port, '/metrics')
  return {
    atSec: Math.round((Date.now() - startedAt) / 1000),
    rssMb: Number(rssMb(server.pid).toFixed(1)),
    heapMb: Number((metric(text, 'switchboard_nodejs_heap_size_used_bytes') / 1024 / 1024).toFixed(1)),
    fds: fdCount(server.pid),
    eventLoopP99Ms: Number((metric(text, 'switchboard_nodejs_eventloop_lag_p99_seconds') * 1000).toFixed(2)),
    storeMb: Number(dirMb(server.dataDir).toFixed(2)),
    connections: [...text.matchAll(/^switchboard_connections\{[^}]*\} (\d+)$/gm)].reduce((s, m) => s + Number(m[1]), 0),
    sessionsOpened: opened,
    yjsDocs: metric(text, 'switchboard_yjs_documents'),
    ...(docs ? await documentSizes() : {})
  }
}

try {
  const fdsBefore = fdCount(server.pid)
  const startedAt = Date.now()
  const samples: SoakSample[] = [await sample(startedAt)]
  const workers: Array<Promise<void>> = []
  for (let i = 0; i < POPULATION; i++) workers.push(churn(KINDS[i % KINDS.length]))
  const endAt = startedAt + MINUTES * 60000
  // a sampling request the server drops is recorded, and the soak goes on: its other samples still say what they saw
  const sampleErrors: Array<{ atSec: number, error: string }> = []
  const trySample = async (docs = true): Promise<SoakSample | undefined> => {
    try {
      return await sample(startedAt, docs)
    } catch (err) {
      sampleErrors.push({ atSec: Math.round((Date.now() - startedAt) / 1000), error: (err as Error).message })
      return undefined
    }
  }
  while (Date.now() < endAt) {
    await new Promise(resolve => setTimeout(resolve, Math.min(SAMPLE_MS, Math.max(0, endAt - Date.now()))))
    const s = await trySample()
    if (s) samples.push(s)
  }
  state.running = false
  await Promise.all(workers)
  // the clients are gone: wait for the server to see every one go (each close is an event; vanished ones by their
  // heartbeat) and to unload every document (YJS_UNLOAD_AFTER_MS after its last editor, or the sampler's last read)
  let after = await trySample(false)
  const settleUntil = Date.now() + 120000
  while ((after === undefined || after.connections > 0 || after.fds > fdsBefore || after.yjsDocs > 0) && Date.now() < settleUntil) {
    await new Promise(resolve => setTimeout(resolve, 1000))
    after = (await trySample(false)) ?? after
  }
  if (after === undefined) throw new Error(`no sample once the clients were gone: ${sampleErrors.at(-1)?.error ?? ''}`)
  const half = samples.filter(s => s.atSec >= (MINUTES * 60) / 2)
  const rssSlopeMbPer10Min = slope(half.map(s => [s.atSec, s.rssMb])) * 600
  const heapSlopeMbPer10Min = slope(half.map(s => [s.atSec, s.heapMb])) * 600
  const result = {
    minutes: MINUTES,
    population: POPULATION,
    docMinutes: DOC_MS / 60000,
    sessionsOpened: opened,
    failures,
    sampleErrors,
    serverWarnings: server.warnings(),
    fdsBefore,
    fdsAfter: after.fds,
    connectionsAfter: after.connections,
    yjsDocsAfter: after.yjsDocs,
    rssSlopeMbPer10Min: Number(rssSlopeMbPer10Min.toFixed(2)),
    heapSlopeMbPer10Min: Number(heapSlopeMbPer10Min.toFixed(2)),
    pass: rssSlopeMbPer10Min < 1 && after.fds <= fdsBefore && after.connections === 0 && after.yjsDocs === 0,
    samples,
    after
  }
  console.log(JSON.stringify(result))
} finally {
  server.stop()
}
