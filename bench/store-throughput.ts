/**
 * Acknowledged state updates per second for one room on the SQLite store,
 * with group commit on and off, in one process session:
 *   npm run bench:store [-- --updates 4000 --clients 8 --inflight 16]
 * "ws": real WebSocket clients send `update` and count `ack`s (end to end, clients in this process too).
 * "store": the same number of applyPatch calls straight on the store, as many in flight.
 * "publish": CPU per acknowledged publish, one at a time, to a room holding a
 * small state and one near ROOM_STATE_MAX_BYTES (a publish must not pay for the state).
 */
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import app from '../app.js'
import { loadConfig } from '../plugins/core/config.js'
import { SqliteStore } from '../plugins/store/sqlite.js'

const { values } = parseArgs({
  options: {
    updates: { type: 'string', default: '4000' },
    clients: { type: 'string', default: '8' },
    inflight: { type: 'string', default: '16' }
  }
})
const UPDATES = Number(values.updates)
const CLIENTS = Number(values.clients)
const INFLIGHT = Number(values.inflight)

async function overWebSocket (groupCommit: boolean): Promise<number> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const config = loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'warn', WS_MESSAGES_PER_SECOND: '1000000', MAX_CONNECTIONS_PER_CLIENT: '1000' })
  const server = Fastify({ logger: { level: 'warn' } })
  await server.register(fp(app), { config, store: { groupCommit } })
  await server.listen({ port: 0, host: '127.0.0.1' })
  const address = server.server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  try {
    const perClient = Math.ceil(UPDATES / CLIENTS)
    const sockets = await Promise.all(Array.from({ length: CLIENTS }, (_, c) => new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?clientId=bench${c}`)
      ws.once('error', reject)
      ws.on('message', raw => {
        if (JSON.parse(raw.toString()).type === 'joined') resolve(ws)
      })
      ws.once('open', () => ws.send(JSON.stringify({ type: 'join', room: 'bench', id: 'join' })))
    })))
    const started = process.hrtime.bigint()
    await Promise.all(sockets.map((ws, c) => new Promise<void>((resolve, reject) => {
      let sent = 0
      let acked = 0
      const send = () => {
        ws.send(JSON.stringify({ type: 'update', room: 'bench', patch: { [`c${c}`]: sent }, id: sent }))
        sent++
      }
      ws.removeAllListeners('message')
      ws.on('message', raw => {
        const m = JSON.parse(raw.toString())
        if (m.id === undefined) return
        if (m.type !== 'ack') return reject(new Error(raw.toString()))
        if (++acked === perClient) return resolve()
        if (sent < perClient) send()
      })
      for (let i = 0; i < Math.min(INFLIGHT, perClient); i++) send()
    })))
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    for (const ws of sockets) ws.terminate()
    return (perClient * CLIENTS) / seconds
  } finally {
    await server.close()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

async function onStore (groupCommit: boolean): Promise<{ rate: number, commits: number }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const store = SqliteStore.open({ dataDir, groupCommit, inboxMax: 100, inboxTtlMs: 60000, log: { info () {}, error () {} } })
  try {
    const inflight = CLIENTS * INFLIGHT
    let next = 0
    const started = process.hrtime.bigint()
    await Promise.all(Array.from({ length: inflight }, async (_, w) => {
      while (next < UPDATES) {
        const i = next++
        await store.applyPatch('bench', { [`w${w}`]: i }, { maxBytes: 262144 })
      }
    }))
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    return { rate: UPDATES / seconds, commits: store.counters.commits }
  } finally {
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/** CPU µs per publish, each waiting for its commit, to a room whose state is `stateBytes` long. */
async function publishCpu (stateBytes: number): Promise<number> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const store = SqliteStore.open({ dataDir, groupCommit: true, inboxMax: 100, inboxTtlMs: 60000, log: { info () {}, error () {} } })
  try {
    await store.applyPatch('bench', { blob: 'x'.repeat(stateBytes) }, { maxBytes: 262144 })
    const publishes = Math.min(UPDATES, 2000)
    const before = process.cpuUsage()
    for (let i = 0; i < publishes; i++) {
      await store.appendMessage('bench', { messageId: `m${i}`, from: 'bench', data: i, timestamp: new Date().toISOString() }, 100)
    }
    const cpu = process.cpuUsage(before)
    return (cpu.user + cpu.system) / publishes
  } finally {
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US')
console.log(`${UPDATES} acknowledged updates to one room; ${CLIENTS} clients x ${INFLIGHT} in flight; synchronous=FULL, WAL`)
const ws = { on: await overWebSocket(true), off: await overWebSocket(false) }
console.log(`ws    group commit on : ${fmt(ws.on)} updates/s`)
console.log(`ws    group commit off: ${fmt(ws.off)} updates/s   (on/off = ${(ws.on / ws.off).toFixed(1)}x)`)
const direct = { on: await onStore(true), off: await onStore(false) }
console.log(`store group commit on : ${fmt(direct.on.rate)} updates/s in ${direct.on.commits} commits`)
console.log(`store group commit off: ${fmt(direct.off.rate)} updates/s in ${direct.off.commits} commits   (on/off = ${(direct.on.rate / direct.off.rate).toFixed(1)}x)`)
const small = await publishCpu(16)
const large = await publishCpu(250000)
console.log(`publish, one at a time: ${fmt(small)} µs CPU each with a 16-byte state, ${fmt(large)} µs with a 250 KB state (${(large / small).toFixed(2)}x)`)
