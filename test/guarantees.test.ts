// The guarantee matrix (issue 26, deliverable 5): every promise of the
// contract's "Every door keeps the same promises", run against every door of
// test/support/doors.ts (and the HTTP API where it writes): the WebSocket
// doors, and the receive-only SSE and HTTP-streaming doors (issue 28) whose
// writes are HTTP requests. A door a case does not apply to is not run for
// it; the comment printed first says why.
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as Y from 'yjs'
import { createSigner } from 'fast-jwt'
import { build, tempDir, waitFor } from './support/helper.js'
import { startServer, type ServerProcess } from './support/process.js'
import { cluster } from './support/cluster-instances.js'
import { redisTestOptions } from './support/redis-server.js'
import { tryUpgrade } from './support/ws-client.js'
import { APP } from './support/pusher-clients.js'
import {
  CASES, DOORS, HTTP_BODY_LIMIT, WAIT_MS, doorsEnv, freshAddress, freshName, notApplicableTable, realClientLog,
  HocuspocusConnection, PusherConnection, SwitchboardConnection, YjsConnection, SyncSub, YType,
  type CaseName, type Closed, type Door, type DoorConnection, type OpenOptions, type ServerTarget
} from './support/doors.js'
import { ADMIN_TOKEN, documentView, documentsInMemory, listed, metric, statusOf } from './support/observation.js'
import { MESSAGE_TEXT_MAX_LENGTH } from '../protocol/limits.js'
import type { SqliteStore } from '../plugins/store/sqlite.js'

const SECRET = 'guarantee-matrix-secret-that-is-long-enough-0123'
const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
const READONLY_ADMIN_TOKEN = 'matrix-readonly-admin-token-0123456789'

/** Every matrix server: every door on, the admin API on, limits far above what a case sends unless it sets them. */
const BASE_ENV = { ...doorsEnv(), ADMIN_TOKEN, RATE_LIMIT_MAX: '100000', MAX_CONNECTIONS_PER_CLIENT: '100', WS_MESSAGES_PER_SECOND: '1000' }

t.comment(notApplicableTable())
// every case below starts its own servers (child processes and clusters among them): more than the runner's default
t.setTimeout(30 * 60 * 1000)

/** Runs `body` as a subtest per door the case applies to. */
async function eachDoor (t: Test, name: CaseName, body: (t: Test, door: Door) => Promise<void>): Promise<void> {
  for (const door of DOORS) {
    if (door.notApplicable[name] !== undefined) continue
    await t.test(door.name, t => body(t, door))
  }
}

/** Passes `what` when `fn` resolves, fails it with the reason when it throws; the test goes on either way. */
async function check (t: Test, what: string, fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn()
    t.pass(what)
    return true
  } catch (err) {
    t.fail(`${what}: ${(err as Error).message}`)
    return false
  }
}

/** A connection closed at teardown. */
async function opened (t: Test, door: Door, server: ServerTarget, opts: OpenOptions = {}): Promise<DoorConnection> {
  const conn = await door.open(server, opts)
  t.teardown(() => conn.close())
  return conn
}

/** The HTTP status a connection attempt was refused with, or 0 when it opened (it is closed again). */
async function openStatus (door: Door, server: ServerTarget, opts: OpenOptions = {}): Promise<number> {
  try {
    const conn = await door.open(server, opts)
    await conn.close()
    return 0
  } catch (err) {
    const status = (err as { statusCode?: number }).statusCode
    if (status === undefined) throw err
    return status
  }
}

/** The close, or null when the connection is still open after `ms`. */
async function closedWithin (conn: DoorConnection, ms = WAIT_MS): Promise<Closed | null> {
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([conn.closed, new Promise<null>(resolve => { timer = setTimeout(resolve, ms, null) })])
  clearTimeout(timer)
  return closed
}

const isYjs = (door: Door) => door.name === 'y-websocket' || door.name === 'hocuspocus'

/** A Pusher apps file with the app of APP_ENV and `options`: the env that serves it. */
function appsFileEnv (t: Test, options: Record<string, unknown>): Record<string, string> {
  const file = join(tempDir(t), 'apps.json')
  writeFileSync(file, JSON.stringify([{ ...APP, ...options }]))
  return { PUSHER_APPS_FILE: file }
}

/** Every door but Pusher from BASE_ENV, Pusher from an apps file. */
function envWithApps (t: Test, options: Record<string, unknown>, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = { ...BASE_ENV, ...appsFileEnv(t, options), ...extra }
  delete env.PUSHER_APP_ID
  delete env.PUSHER_APP_KEY
  delete env.PUSHER_APP_SECRET
  return env
}

// ------------------------------------------------------------------------- a

/**
 * The server of one door's hostile frames (a child process: a crash is an
 * exit, not the test's), with a bystander connection on every door. Started
 * again when a frame took it down, so the next frame is judged on its own.
 */
class Arena {
  server!: ServerProcess
  bystanders: DoorConnection[] = []
  /** Documents in memory with only the bystanders connected. */
  baselineDocuments = 0
  /** Hostile documents of the current server, for the providers' check at the end. */
  documents: string[] = []
  private writes = 0

  constructor (private readonly t: Test, private readonly env: Record<string, string>) {}

  async start (): Promise<void> {
    this.server = await startServer(this.t, { ...this.env, DATA_DIR: tempDir(this.t) }, {})
    this.bystanders = []
    for (const door of DOORS) this.bystanders.push(await door.open(this.server))
    this.baselineDocuments = await documentsInMemory(this.server) ?? 0
    this.documents = []
  }

  get exited (): boolean {
    return this.server.proc.exitCode !== null || this.server.proc.signalCode !== null
  }

  /** Alive and serving: /health 200, and /ready 200 (503 once an uncaught error started a shutdown). */
  async alive (): Promise<boolean> {
    return !this.exited && await statusOf(this.server, '/health') === 200 && await statusOf(this.server, '/ready') === 200
  }

  /** How the process ended, once it has (killed if it has not after `ms`). */
  async ended (ms = 30000): Promise<{ code: number | null, signal: string | null }> {
    let timer: NodeJS.Timeout | undefined
    const exit = await Promise.race([this.server.exited, new Promise<null>(resolve => { timer = setTimeout(resolve, ms, null) })])
    clearTimeout(timer)
    if (exit) return exit
    this.server.proc.kill('SIGKILL')
    return await this.server.exited
  }

  /** A live server and open bystanders for the next frame. */
  async ready (): Promise<void> {
    if (!await this.alive()) {
      await this.ended()
      for (const b of this.bystanders) await b.close()
      await this.start()
      return
    }
    for (let i = 0; i < this.bystanders.length; i++) {
      if (!this.bystanders[i].open) this.bystanders[i] = await DOORS[i].open(this.server)
    }
  }

  tag (): string {
    return `bystander-${++this.writes}`
  }

  async close (): Promise<void> {
    for (const b of this.bystanders) await b.close()
  }
}

t.test(CASES.badInput, async t => {
  const env = { ...BASE_ENV, WS_MAX_PAYLOAD: '131072', YJS_UNLOAD_AFTER_MS: '0' }
  await eachDoor(t, 'badInput', async (t, door) => {
    const arena = new Arena(t, env)
    await arena.start()
    t.teardown(() => arena.close())
    // the frames name the connection's resource (room, channel, document): built again for each connection, on a fresh one
    const first = await door.open(arena.server)
    const names = door.hostileFrames(first).map(f => f.name)
    await first.close()
    for (const [i, name] of names.entries()) {
      await t.test(name, async t => {
        await arena.ready()
        const server = arena.server
        const conn = await door.open(server)
        t.teardown(() => conn.close())
        const frame = door.hostileFrames(conn)[i]
        if (isYjs(door)) arena.documents.push(conn.resource)
        await conn.write(`seed-${i}`)
        const before = await door.readStored(server, conn.resource)
        const docBefore = isYjs(door) ? await documentView(server, conn.resource) : null

        const answer = await conn.answerTo(() => conn.deliver(frame))
        t.ok(answer.refusal, `refused with ${door.name}'s refusal${answer.closed ? ` (closed ${answer.closed.code} ${answer.closed.reason} instead)` : answer.refusal ? '' : ' (taken without one: the probe after it was answered first)'}`)
        if (answer.refusal) t.equal(door.badInputProblem(answer.refusal, frame), null, `the refusal is the contract's: ${JSON.stringify(answer.refusal)}`)
        if (!await arena.alive()) {
          const lines = server.logs().filter(l => l.level >= 50).map(l => `${String(l.event ?? '')} ${String(l.err?.message ?? l.msg ?? '').slice(0, 120)}`)
          t.fail(`the process is alive (GET /health and /ready 200); it went down, and exited with ${JSON.stringify(await arena.ended())}; its errors: ${JSON.stringify(lines.slice(0, 3))}`)
          return
        }
        t.pass('the process is alive: GET /health and /ready 200')
        t.equal(answer.closed, null, 'the hostile connection is not closed')
        if (!answer.closed) await check(t, 'the hostile connection is still served', () => conn.alive())
        for (const b of arena.bystanders) await check(t, `a bystander on ${b.door.name} still writes and reads it back`, () => b.write(arena.tag()))
        if (before === null) {
          t.comment(`${door.name} stores nothing a client sends: nothing to compare`)
        } else {
          t.same(await door.readStored(server, conn.resource), before, 'nothing was stored')
        }
        if (docBefore) {
          t.same(await documentView(server, conn.resource), docBefore, 'the document (GET /api/docs/:doc/update) is unchanged')
          await conn.close()
          await check(t, 'the document is unloaded once its connection left', () => waitFor(async () => (await documentsInMemory(server) ?? Infinity) <= arena.baselineDocuments, 'the hostile document to unload', WAIT_MS, 100))
          const res = await fetch(`${server.url}/api/docs/${conn.resource}`)
          await res.arrayBuffer()
          t.equal(res.status, 200, 'the document loads again from the store: GET /api/docs/:doc 200')
          t.same(await documentView(server, conn.resource), docBefore, 'and it is the document it was')
        }
      })
    }
    if (door.realEditor) {
      await t.test('a fresh provider syncs every document a hostile frame was sent to', async t => {
        await arena.ready()
        for (const doc of arena.documents) {
          await check(t, `${doc} syncs and holds its seed`, async () => {
            const log = await realClientLog(door, t, arena.server, doc)
            if (!log.some(tag => tag.startsWith('seed-'))) throw new Error(`the provider sees ${JSON.stringify(log)}`)
          })
        }
      })
    }
  })
})

// ------------------------------------------------------------------------- b

t.test(CASES.size, async t => {
  const limits = { textMaxLength: MESSAGE_TEXT_MAX_LENGTH, maxEventPayloadBytes: 10240, yjsMaxUpdateBytes: 4096 }
  const maxPayload = 65536
  const server = await build(t, { ...BASE_ENV, WS_MAX_PAYLOAD: String(maxPayload), YJS_MAX_UPDATE_BYTES: String(limits.yjsMaxUpdateBytes) })
  await eachDoor(t, 'size', async (t, door) => {
    if (door.receiveOnly) {
      await t.test(`a write over the HTTP body limit (${HTTP_BODY_LIMIT} bytes) is refused 413 naming the limit; the stream stays`, async t => {
        const conn = await opened(t, door, server)
        await conn.write('before')
        const before = await door.readStored(server, conn.resource)
        const frame = door.oversizedFrame(conn, HTTP_BODY_LIMIT)
        t.ok(frame.data.length > HTTP_BODY_LIMIT, `the body is ${frame.data.length} bytes`)
        const answer = await conn.answerTo(() => conn.deliver(frame))
        t.equal(answer.refusal?.status, 413, `refused with 413 (got ${JSON.stringify(answer.refusal ?? answer.closed)})`)
        t.equal(answer.refusal?.code, 'payload_too_large')
        t.match(answer.refusal?.message, new RegExp(`\\bbody\\b.*${HTTP_BODY_LIMIT}`), 'the message names the body and the limit')
        t.equal(answer.closed, null, 'the stream is not closed')
        await check(t, 'the stream is still served', () => conn.alive())
        t.same(await door.readStored(server, conn.resource), before, 'nothing was stored')
        t.equal(await statusOf(server, '/health'), 200, 'the process is fine')
      })
    }
    if (!door.receiveOnly) {
      await t.test(`a frame over WS_MAX_PAYLOAD closes with ${door.closeCodes.tooLarge}`, async t => {
        const conn = await opened(t, door, server)
        const frame = door.oversizedFrame(conn, maxPayload)
        t.ok(frame.data.length > maxPayload, `the frame is ${frame.data.length} bytes`)
        conn.send(frame.data, frame.binary)
        const closed = await closedWithin(conn)
        t.equal(closed?.code, door.closeCodes.tooLarge, `closed with ${door.closeCodes.tooLarge} (got ${JSON.stringify(closed)})`)
        t.equal(await statusOf(server, '/health'), 200, 'the process is fine')
      })
    }
    await t.test('a field over its limit is refused naming the field and the limit; the connection stays', async t => {
      const conn = await opened(t, door, server)
      await conn.write('before')
      const before = await door.readStored(server, conn.resource)
      const frame = door.overFieldLimit(conn, limits)
      t.ok(frame.data.length < maxPayload, `${frame.name}: the frame (${frame.data.length} bytes) is within WS_MAX_PAYLOAD`)
      const answer = await conn.answerTo(() => conn.deliver(frame))
      t.ok(answer.refusal, `refused${answer.closed ? ` (closed ${answer.closed.code} instead)` : answer.refusal ? '' : ' (taken without a refusal)'}`)
      if (answer.refusal) t.equal(door.badInputProblem(answer.refusal, frame), null, `the refusal names ${frame.field} and ${frame.limit}: ${JSON.stringify(answer.refusal)}`)
      await check(t, 'the connection is still served', () => conn.alive())
      if (before !== null) t.same(await door.readStored(server, conn.resource), before, 'nothing was stored')
    })
  })
})

// ------------------------------------------------------------------------- c

t.test(CASES.rate, async t => {
  const rate = 5
  const server = await build(t, { ...BASE_ENV, WS_MESSAGES_PER_SECOND: String(rate) })
  await eachDoor(t, 'rate', async (t, door) => {
    const refusal = door.rateRefusal
    if (refusal) {
      await t.test('frames over the rate are refused and dropped; the connection stays', async t => {
        const conn = await opened(t, door, server)
        const from = conn.frames.length
        door.floods[0].send(conn, rate * 4)
        const refused = await conn.next(f => { const r = conn.refusalOf(f); return r !== null && refusal(r) }, 'a rate refusal', from)
        t.ok(refused, `refused: ${JSON.stringify(conn.refusalOf(refused))}`)
        t.equal(conn.closedWith, null, 'not closed for a burst')
      })
    }
    for (const flood of door.floods) {
      await t.test(`sustained flooding with ${flood.name} closes with ${door.closeCodes.flood}`, async t => {
        const conn = await opened(t, door, server)
        const doc = conn.resource
        flood.send(conn, 400)
        let sent = 400
        // then keep going over the rate until the server closes it
        const more = setInterval(() => {
          if (!conn.open) return
          flood.send(conn, 10)
          sent += 10
        }, 50)
        t.teardown(() => clearInterval(more))
        const closed = await closedWithin(conn)
        clearInterval(more)
        t.equal(closed?.code, door.closeCodes.flood, `closed with ${door.closeCodes.flood} (got ${JSON.stringify(closed)})`)
        if (flood.name.includes('sync step 2')) {
          const log = await door.readStored(server, doc) ?? []
          const stored = log.filter(tag => tag.startsWith('step2-')).length
          t.ok(stored < 400, `the flood was cut: ${stored} of the ${sent} changes sent as sync step 2 were stored, fewer than the first 400`)
        }
        t.equal(await statusOf(server, '/health'), 200, 'the process is fine')
      })
    }
    const realEditor = door.realEditor
    if (realEditor) {
      await t.test(`a provider typing faster than the rate is closed with ${door.closeCodes.flood}, reconnects, resyncs and loses nothing`, async t => {
        const doc = freshName('typing')
        const editor = realEditor(t, server, doc)
        await waitFor(() => editor.synced(), 'the provider to sync', WAIT_MS, 20)
        const typed = Array.from({ length: 40 }, (_, i) => `typed-${i}`)
        for (const tag of typed) editor.doc.getArray<string>('log').push([tag])
        await check(t, `its socket was closed with ${door.closeCodes.flood}`, () => waitFor(() => editor.closeCodes.includes(door.closeCodes.flood ?? NaN), `a ${door.closeCodes.flood} close (got ${JSON.stringify(editor.closeCodes)})`, WAIT_MS, 20))
        await check(t, 'the server holds everything typed once the provider resynced', () => waitFor(async () => {
          const log = await door.readStored(server, doc).catch(() => []) ?? []
          return typed.every(tag => log.includes(tag))
        }, 'every typed change in the document', 30000, 200))
      })
    }
  })
})

// ------------------------------------------------------------------------- d

t.test(CASES.sendBuffer, async t => {
  const server = await startServer(t, { ...BASE_ENV, DATA_DIR: tempDir(t), WS_MAX_BUFFERED_BYTES: '65536', WS_MESSAGES_PER_SECOND: '10000' }, {})
  await eachDoor(t, 'sendBuffer', async (t, door) => {
    const conn = await opened(t, door, server)
    const labels = { protocol: door.name }
    const isListed = async () => await listed(server, door.name, conn.address) !== undefined
    const wasListed = await check(t, 'the connection is listed by GET /api/admin/connections', () => waitFor(isListed, 'the listing', WAIT_MS, 100))
    const more = await door.loadFor(conn)
    const closesBefore = await metric(server, 'switchboard_slow_consumer_closes_total', labels) ?? 0
    const logged = () => server.logs().some(l => l.event === 'connection.slow_consumer' && l.protocol === door.name)
    const closedByServer = async () => (await metric(server, 'switchboard_slow_consumer_closes_total', labels) ?? 0) > closesBefore ||
      logged() || (wasListed && !await isListed())
    conn.stopReading() // the client no longer reads: the kernel buffers fill, then the server's send buffer
    let batches = 0
    await waitFor(async () => {
      if (await closedByServer() || batches >= 100) return true
      await more()
      batches++
      return false
    }, 'the server to close the connection that does not read', 180000, 0)
    t.comment(`${batches} batches sent while the client did not read`)
    await check(t, `switchboard_slow_consumer_closes_total{protocol="${door.name}"} grew from ${closesBefore}`, () => waitFor(async () => (await metric(server, 'switchboard_slow_consumer_closes_total', labels) ?? 0) > closesBefore, 'the counter to grow', 5000, 100))
    // the child's log lines arrive over its stdout pipe, which can lag behind an HTTP answer: wait for the line
    await check(t, `logged as connection.slow_consumer with protocol ${door.name}`, () => waitFor(logged, 'the connection.slow_consumer log line'))
    if (wasListed) await check(t, 'the connection left GET /api/admin/connections', () => waitFor(async () => !await isListed(), 'the connection to leave the listing', WAIT_MS, 100))
    t.equal(await statusOf(server, '/health'), 200, 'the process is fine')
  })
})

// ------------------------------------------------------------------------- e

t.test(CASES.deadPeer, async t => {
  // a child process: a 200 ms heartbeat must not depend on the test's own event loop, which also answers the pings
  const server = await startServer(t, { ...BASE_ENV, DATA_DIR: tempDir(t), HEARTBEAT_INTERVAL_MS: '200' }, {})
  await eachDoor(t, 'deadPeer', async (t, door) => {
    const labels = { protocol: door.name }
    const before = await metric(server, 'switchboard_connections', labels) ?? 0
    const conn = await opened(t, door, server)
    const wasListed = await check(t, 'the connection is listed by GET /api/admin/connections', () => waitFor(async () => await listed(server, door.name, conn.address) !== undefined, 'the listing', WAIT_MS, 100))
    const counted = await metric(server, 'switchboard_connections', labels)
    t.equal(counted, before + 1, `switchboard_connections{protocol="${door.name}"} counts it`)
    conn.stopReading() // answers no ping from now on
    if (wasListed) await check(t, 'the dead peer leaves GET /api/admin/connections', () => waitFor(async () => await listed(server, door.name, conn.address) === undefined, 'the dead peer to be dropped', WAIT_MS, 100))
    if (counted !== undefined) await check(t, `switchboard_connections{protocol="${door.name}"} goes back down`, () => waitFor(async () => await metric(server, 'switchboard_connections', labels) === before, 'the gauge to go back down', WAIT_MS, 100))
    conn.resumeReading()
    const served = await conn.roundTrip(5000).then(() => true, () => false)
    t.notOk(served, 'reading again, the client finds its connection gone')
  })
})

// ------------------------------------------------------------------------- f

t.test(CASES.tokenExpiry, async t => {
  const server = await build(t, { ...BASE_ENV, AUTH_SECRET: SECRET })
  await eachDoor(t, 'tokenExpiry', async (t, door) => {
    const exp = Math.ceil(Date.now() / 1000) + 2
    const token = sign({ sub: freshName('expiring'), exp })
    const conn = await opened(t, door, server, { token })
    await check(t, 'the connection works before its token expires', () => conn.write('before-expiry'))
    const closed = await closedWithin(conn, WAIT_MS)
    t.equal(closed?.code, door.closeCodes.tokenExpired, `closed with ${String(door.closeCodes.tokenExpired)} once the token expired (got ${JSON.stringify(closed)})`)
    if (closed) t.ok(Date.now() >= exp * 1000, 'not before the token\'s exp')
  })
})

// ------------------------------------------------------------------------- g

t.test(CASES.readOnly, async t => {
  const server = await build(t, { ...BASE_ENV, AUTH_SECRET: SECRET, ADMIN_READONLY_TOKEN: READONLY_ADMIN_TOKEN, ENABLE_CODE_EXECUTION: 'true' })
  const resource = 'ro-doc1'
  const writerToken = sign({ sub: 'writer', rooms: ['ro-doc*'] })
  const principals = [
    { name: 'ADMIN_READONLY_TOKEN', token: READONLY_ADMIN_TOKEN, sub: 'admin-readonly', admin: true },
    { name: 'a JWT with role admin-readonly', token: sign({ sub: 'ro-admin', role: 'admin-readonly' }), sub: 'ro-admin', admin: true },
    { name: `a rooms claim read:${resource}`, token: sign({ sub: 'reader-exact', rooms: [`read:${resource}`] }), sub: 'reader-exact', admin: false },
    { name: 'a rooms claim read:ro-doc* (one grammar: a prefix)', token: sign({ sub: 'reader-prefix', rooms: ['read:ro-doc*'] }), sub: 'reader-prefix', admin: false }
  ]
  await eachDoor(t, 'readOnly', async (t, door) => {
    const writer = await opened(t, door, server, { token: writerToken, resource })
    await writer.write(`${door.name}-writer-seed`)
    for (const principal of principals) {
      await t.test(principal.name, async t => {
        const before = await door.readStored(server, resource, writerToken)
        let reader: DoorConnection
        try {
          reader = await opened(t, door, server, { token: principal.token, resource, setUp: door.name !== 'switchboard' })
        } catch (err) {
          t.fail(`it may open ${resource} to read: ${(err as Error).message}`)
          return
        }
        if (reader instanceof SwitchboardConnection) {
          const joined = await reader.request({ type: 'join', room: resource })
          t.equal(joined.type, 'joined', `it joins room ${resource} to read (${JSON.stringify(joined).slice(0, 200)})`)
        }
        if (reader instanceof HocuspocusConnection) t.equal(reader.scope, 'readonly', 'Hocuspocus authenticates the document read-only')
        const broadcast = door.peerBroadcast
        if (broadcast) {
          const from = writer.frames.length
          broadcast.send(reader, 'from a read-only peer')
          // the server handled the broadcast before it answered the reader, and wrote any relay to the writer before its own answer
          await check(t, 'the reader\'s socket answers after its broadcast', () => reader.roundTrip())
          await writer.roundTrip()
          t.notOk(writer.frames.slice(from).some(f => broadcast.received(f, 'from a read-only peer')), 'its stateless broadcast did not reach the writer (row 16)')
        }
        const mark = writer.frames.length
        const attempts = door.writeAttempts(reader)
        if (reader instanceof SwitchboardConnection && principal.admin) {
          const sb = reader
          attempts.push({
            name: 'send',
            async attempt (tag) {
              const reply = await sb.request({ type: 'send', to: 'writer', text: tag })
              return reply.type === 'ack' ? { acknowledged: true, message: JSON.stringify(reply) } : { acknowledged: false, code: reply.code, message: reply.message }
            }
          })
        }
        for (const attempt of attempts) {
          const outcome = await attempt.attempt(`read-only-${attempt.name}`)
          t.ok(door.isForbidden(outcome), `${attempt.name} is refused as forbidden (${JSON.stringify(outcome).slice(0, 300)})`)
        }
        await writer.roundTrip()
        t.same(writer.frames.slice(mark).filter(f => door.isRelayedWrite(f)).map(f => JSON.stringify(f).slice(0, 100)), [], 'the writer received no write of it')
        t.same(await door.readStored(server, resource, writerToken), before, `${resource} is unchanged`)
      })
    }
  })
  await t.test('HTTP API', async t => {
    const update = (() => {
      const doc = new Y.Doc()
      doc.getArray('log').push(['read-only http'])
      return Buffer.from(Y.encodeStateAsUpdate(doc))
    })()
    for (const principal of principals) {
      await t.test(principal.name, async t => {
        const headers = { authorization: `Bearer ${principal.token}`, 'content-type': 'application/json' }
        const writes: Array<[string, string, RequestInit]> = [
          ['POST', `/api/rooms/${resource}/publish`, { body: JSON.stringify({ data: 'read-only' }) }],
          ['PATCH', `/api/rooms/${resource}/state`, { body: JSON.stringify({ patch: { readOnly: true } }) }],
          ['POST', `/api/docs/${resource}/update`, { body: update, headers: { authorization: `Bearer ${principal.token}`, 'content-type': 'application/octet-stream' } }]
        ]
        if (principal.admin) writes.push(['POST', '/api/send', { body: JSON.stringify({ from: principal.sub, to: 'writer', text: 'read-only' }) }])
        for (const [method, path, init] of writes) {
          const res = await fetch(`${server.url}${path}`, { method, headers, ...init })
          const body = await res.json().catch(() => null) as { code?: string } | null
          t.equal(res.status, 403, `${method} ${path}: 403`)
          t.equal(body?.code, 'forbidden', `${method} ${path}: code forbidden (${JSON.stringify(body).slice(0, 200)})`)
        }
      })
    }
  })
})

// ------------------------------------------------------------------------- h

t.test(CASES.shutdown, async t => {
  const dataDir = tempDir(t)
  const env = { ...BASE_ENV, DATA_DIR: dataDir }
  const first = await startServer(t, env, {})
  const room = freshName('kept')
  const native = await opened(t, DOORS[0], first, { resource: room }) as SwitchboardConnection
  const tags = Array.from({ length: 20 }, (_, i) => `acked-${i}`)
  await Promise.all(tags.map(tag => native.write(tag)))
  const pusherConn = await opened(t, DOORS[1], first) as PusherConnection
  const yDoc = freshName('kept-y')
  const yWriter = await opened(t, DOORS[2], first, { resource: yDoc }) as YjsConnection
  const yReader = await opened(t, DOORS[2], first, { resource: yDoc }) as YjsConnection
  const yTags = Array.from({ length: 10 }, (_, i) => `relayed-${i}`)
  for (const tag of yTags) yWriter.sendUpdate(tag)
  // acknowledged for y-websocket = the second client received it (the server relays only what it committed)
  const received = new Y.Doc()
  let seen = 0
  await yReader.waitUntil(() => {
    for (; seen < yReader.frames.length; seen++) {
      const f = yReader.frames[seen]
      if (f.type === YType.sync && f.sub === SyncSub.update) Y.applyUpdate(received, f.payload)
    }
    const log = received.getArray<string>('log').toArray()
    return yTags.every(tag => log.includes(tag))
  }, 'the second y-websocket client to receive every update')
  const hDoc = freshName('kept-h')
  const hocus = await opened(t, DOORS[3], first, { resource: hDoc }) as YjsConnection
  const hTags = Array.from({ length: 10 }, (_, i) => `synced-${i}`)
  for (const tag of hTags) await hocus.write(tag)
  // the receive-only doors: each acknowledged HTTP write read back on the stream
  const streamed: Array<[Door, DoorConnection, string, string[]]> = []
  for (const door of DOORS.filter(d => d.receiveOnly)) {
    const streamRoom = freshName(`kept-${door.name}`)
    const conn = await opened(t, door, first, { resource: streamRoom })
    const streamTags = Array.from({ length: 10 }, (_, i) => `${door.name}-acked-${i}`)
    for (const tag of streamTags) await conn.write(tag)
    streamed.push([door, conn, streamRoom, streamTags])
  }

  first.proc.kill('SIGTERM')
  const conns: Array<[Door, DoorConnection[]]> = [[DOORS[0], [native]], [DOORS[1], [pusherConn]], [DOORS[2], [yWriter, yReader]], [DOORS[3], [hocus]], ...streamed.map(([door, conn]): [Door, DoorConnection[]] => [door, [conn]])]
  const closes = new Map<DoorConnection, Closed | null>()
  await Promise.all(conns.flatMap(([, cs]) => cs.map(async c => closes.set(c, await closedWithin(c, 20000)))))
  const exit = await Promise.race([first.exited, new Promise<null>(resolve => setTimeout(resolve, 30000, null))])
  t.same(exit, { code: 0, signal: null }, 'the process exits 0')

  const second = await startServer(t, env, {})
  const kept: Record<string, [string, string[]]> = { switchboard: [room, tags], 'y-websocket': [yDoc, yTags], hocuspocus: [hDoc, hTags], ...Object.fromEntries(streamed.map(([door, , r, tags]) => [door.name, [r, tags]])) }
  await eachDoor(t, 'shutdown', async (t, door) => {
    for (const conn of conns.find(([d]) => d === door)![1]) {
      const closed = closes.get(conn)
      t.equal(closed?.code, door.closeCodes.shutdown, `closed with ${door.closeCodes.shutdown} (got ${JSON.stringify(closed)})`)
      const notice = door.shutdownNotice
      if (notice) t.ok(conn.frames.some(f => notice(f)), 'told in its protocol\'s words first')
    }
    const keep = kept[door.name]
    if (!keep) {
      t.comment(`${door.name} stores nothing a client sends: nothing to find after the restart`)
      return
    }
    const stored = await door.readStored(second, keep[0]).catch(err => { t.fail((err as Error).message); return [] }) ?? []
    t.same(keep[1].filter(tag => !stored.includes(tag)), [], `restarted on the same DATA_DIR, every write acknowledged before SIGTERM is there (${keep[1].length})`)
  })
})

// ------------------------------------------------------------------------- i

t.test(CASES.admin, async t => {
  const server = await build(t, BASE_ENV)
  const conns = new Map<Door, DoorConnection>()
  for (const door of DOORS) conns.set(door, await opened(t, door, server))
  await eachDoor(t, 'admin', async (t, door) => {
    const conn = conns.get(door)!
    const entry = await listed(server, door.name, conn.address)
    t.ok(entry, `GET /api/admin/connections lists it with protocol ${door.name} and its client key ${conn.address}`)
    if (entry) t.ok(typeof entry.clientId === 'string' && entry.clientId !== '', `with its clientId (${entry.clientId})`)
    const count = await metric(server, 'switchboard_connections', { protocol: door.name })
    t.ok(count !== undefined && count >= 1, `/metrics: switchboard_connections{protocol="${door.name}"} counts it (${String(count)})`)
  })
})

// ------------------------------------------------------------------------- j

t.test(CASES.storeFailure, async t => {
  const server = await build(t, BASE_ENV, { app: { store: { probeIntervalMs: 50 } } })
  const BIG = 'x'.repeat(20000)
  const pairs = new Map<Door, [DoorConnection, DoorConnection]>()
  for (const door of DOORS) {
    if (door.notApplicable.storeFailure !== undefined) continue
    const resource = freshName('store')
    const writer = await opened(t, door, server, { resource })
    const other = await opened(t, door, server, { resource })
    await writer.write('before-the-failure')
    pairs.set(door, [writer, other])
  }
  const db = (server.app.store as SqliteStore).db
  db.pragma(`max_page_count = ${Number(db.pragma('page_count', { simple: true }))}`)
  t.teardown(() => { db.pragma('max_page_count = 1073741823') })

  await eachDoor(t, 'storeFailure', async (t, door) => {
    const [writer, other] = pairs.get(door)!
    const before = await door.readStored(server, writer.resource)
    const mark = other.frames.length
    const outcome = await door.writeAttempts(writer)[0].attempt(`during-the-failure-${BIG}`)
    t.ok(door.isUnavailable(outcome), `the write is refused (${JSON.stringify(outcome).slice(0, 300)})`)
    await other.roundTrip()
    t.same(other.frames.slice(mark).filter(f => door.isRelayedWrite(f)).map(f => JSON.stringify(f).slice(0, 100)), [], 'it was not relayed to the other client')
    t.same(await door.readStored(server, writer.resource), before, 'nothing was stored')
  })
  await t.test('HTTP API', async t => {
    const doc = new Y.Doc()
    doc.getArray('log').push([BIG])
    const writes: Array<[string, string, string, string | Buffer]> = [
      ['POST', '/api/send', 'application/json', JSON.stringify({ from: 'svc', to: 'offline-client', text: BIG })],
      ['POST', '/api/rooms/http-room/publish', 'application/json', JSON.stringify({ data: BIG })],
      ['POST', `/api/docs/${freshName('http-doc')}/update`, 'application/octet-stream', Buffer.from(Y.encodeStateAsUpdate(doc))]
    ]
    for (const [method, path, type, body] of writes) {
      const res = await fetch(`${server.url}${path}`, { method, headers: { 'content-type': type }, body })
      await res.arrayBuffer()
      t.equal(res.status, 503, `${method} ${path}: 503`)
    }
  })
  await t.test('/ready answers 503 naming the store', async t => {
    const res = await fetch(`${server.url}/ready`)
    const body = await res.json() as { problems?: string[] }
    t.equal(res.status, 503)
    t.match(body.problems, [/store/], `it names the store (${JSON.stringify(body)})`)
  })
})

// ------------------------------------------------------------------------- k

t.test(CASES.clusterCaps, redisTestOptions(), async t => {
  const env = envWithApps(t, { maxPresenceMembers: 3 }, { MAX_CONNECTIONS_PER_CLIENT: '2' })
  const { instances: [a, b] } = await cluster(t, 2, env)
  await eachDoor(t, 'clusterCaps', async (t, door) => {
    const address = freshAddress()
    const resource = freshName('capped')
    await opened(t, door, a, { address, resource })
    await opened(t, door, a, { address, resource })
    const third = door.receiveOnly ? { status: await openStatus(door, b, { address, resource }) } : await tryUpgrade(door.url(b, { resource }), { localAddress: address })
    t.equal(third.status, 429, `a third connection of client key ${address} on the other instance is refused 429 (got ${third.status})`)
  })
  await t.test('pusher: the presence member cap (maxPresenceMembers 3) counts across instances (row 11)', async t => {
    const channel = 'presence-capped'
    for (const user of ['u1', 'u2', 'u3']) {
      const conn = await opened(t, DOORS[1], a, { setUp: false }) as PusherConnection
      const answer = await conn.subscribe(channel, JSON.stringify({ user_id: user }))
      t.equal(answer.event, 'pusher_internal:subscription_succeeded', `${user} joins on instance A`)
    }
    const fourth = await opened(t, DOORS[1], b, { setUp: false }) as PusherConnection
    const answer = await fourth.subscribe(channel, JSON.stringify({ user_id: 'u4' }))
    const data = answer.parsed ?? answer.data
    t.equal(answer.event, 'pusher:subscription_error', `the 4th distinct user, on instance B, is refused (${JSON.stringify(answer).slice(0, 300)})`)
    t.match(data, { status: 4100, type: 'LimitReached' })
  })
})

// ------------------------------------------------------------------------- l

t.test(CASES.order, redisTestOptions(), async t => {
  const env = envWithApps(t, { maxClientEventsPerSecond: 1000 })
  const { instances: [a, b] } = await cluster(t, 2, env)
  const PER_PUBLISHER = 300
  await t.test('switchboard: a member on each instance receives all 600 room messages of two publishers (one per instance) in offset order (row 17)', async t => {
    const room = freshName('ordered')
    const [memberA, memberB, publisherA, publisherB] = await Promise.all([a, b, a, b].map(s => opened(t, DOORS[0], s, { resource: room }))) as SwitchboardConnection[]
    const publish = (p: SwitchboardConnection, label: string) => {
      for (let i = 0; i < PER_PUBLISHER; i++) p.send(JSON.stringify({ type: 'publish', room, data: { tag: `${label}-${i}` }, id: `${label}-${i}` }))
      return p.waitUntil(() => p.frames.filter(f => f.type === 'ack' && String(f.id).startsWith(`${label}-`)).length === PER_PUBLISHER, `${label}'s ${PER_PUBLISHER} acks`, 60000)
    }
    await Promise.all([publish(publisherA, 'A'), publish(publisherB, 'B')])
    for (const [name, member] of [['member on A', memberA], ['member on B', memberB], ['publisher on A', publisherA], ['publisher on B', publisherB]] as const) {
      const messages = () => member.frames.filter(f => f.type === 'room_message' && f.room === room)
      await check(t, `the ${name} receives all ${2 * PER_PUBLISHER}`, () => member.waitUntil(() => messages().length >= 2 * PER_PUBLISHER, 'every room_message', 60000))
      const offsets = messages().map(m => m.offset as number)
      const outOfOrder = offsets.filter((o, i) => i > 0 && o !== offsets[i - 1] + 1).length
      t.equal(offsets.length, 2 * PER_PUBLISHER, `the ${name} got exactly ${2 * PER_PUBLISHER} (no duplicate)`)
      t.equal(outOfOrder, 0, `the ${name} got them with offsets increasing by 1 (${outOfOrder} out of order)`)
    }
  })
  for (const door of DOORS.filter(d => d.receiveOnly)) {
    await t.test(`${door.name}: a stream on each instance receives all ${2 * PER_PUBLISHER} room messages of two HTTP publishers (one per instance) in offset order`, async t => {
      const room = freshName('ordered')
      const [streamA, streamB] = await Promise.all([a, b].map(s => opened(t, door, s, { resource: room })))
      // 20 requests in flight per publisher (more from one address would pass MAX_PENDING_CONNECTIONS_PER_CLIENT)
      const publish = async (server: ServerTarget, label: string) => {
        const answers: number[] = []
        for (let from = 0; from < PER_PUBLISHER; from += 20) {
          answers.push(...await Promise.all(Array.from({ length: Math.min(20, PER_PUBLISHER - from) }, async (_, i) => {
            const res = await fetch(`${server.url}/api/rooms/${room}/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ data: { tag: `${label}-${from + i}` } }) })
            await res.arrayBuffer()
            return res.status
          })))
        }
        t.same(answers.filter(s => s !== 200), [], `publisher ${label}'s ${PER_PUBLISHER} publishes acknowledged`)
      }
      await Promise.all([publish(a, 'A'), publish(b, 'B')])
      for (const [name, conn] of [['stream on A', streamA], ['stream on B', streamB]] as const) {
        const messages = () => conn.frames.filter(f => f?.event === 'room_message' && f.data?.room === room).map(f => f.data)
        await check(t, `the ${name} receives all ${2 * PER_PUBLISHER}`, () => conn.waitUntil(() => messages().length >= 2 * PER_PUBLISHER, 'every room_message', 60000))
        const offsets = messages().map(m => m.offset as number)
        const outOfOrder = offsets.filter((o, i) => i > 0 && o !== offsets[i - 1] + 1).length
        t.equal(offsets.length, 2 * PER_PUBLISHER, `the ${name} got exactly ${2 * PER_PUBLISHER} (no duplicate)`)
        t.equal(outOfOrder, 0, `the ${name} got them with offsets increasing by 1 (${outOfOrder} out of order)`)
      }
    })
  }
  await t.test('pusher: the events of one publisher arrive in order on every instance', async t => {
    const resource = freshName('ordered')
    const [subA, subB, pubA, pubB] = await Promise.all([a, b, a, b].map(s => opened(t, DOORS[1], s, { resource }))) as PusherConnection[]
    for (const [label, p] of [['A', pubA], ['B', pubB]] as const) {
      for (let i = 0; i < PER_PUBLISHER; i++) p.sendEvent('client-seq', { from: label, n: i }, p.channel)
    }
    const receivers: Array<[string, PusherConnection, string[]]> = [['subscriber on A', subA, ['A', 'B']], ['subscriber on B', subB, ['A', 'B']], ['publisher on A', pubA, ['B']], ['publisher on B', pubB, ['A']]]
    for (const [name, conn, from] of receivers) {
      const events = (label: string) => conn.frames.filter(f => f.event === 'client-seq' && f.parsed?.from === label).map(f => f.parsed.n as number)
      await check(t, `the ${name} receives every event`, () => conn.waitUntil(() => from.every(label => events(label).length >= PER_PUBLISHER), 'every client event', 60000))
      for (const label of from) {
        const seq = events(label)
        t.same(seq, Array.from({ length: PER_PUBLISHER }, (_, i) => i), `the ${name} has publisher ${label}'s ${PER_PUBLISHER} events in order, once each`)
      }
    }
  })
})

// ------------------------------------------------------------------------- m

t.test(CASES.isolated, redisTestOptions(), async t => {
  const { redis, instances: [a] } = await cluster(t, 2, { ...doorsEnv(), ADMIN_TOKEN })
  const conns = new Map<Door, DoorConnection>()
  for (const door of DOORS) {
    if (door.notApplicable.isolated !== undefined) continue
    const conn = await opened(t, door, a)
    await conn.write('while-redis-is-up')
    conns.set(door, conn)
  }
  await redis.kill()
  await waitFor(async () => await statusOf(a, '/ready') === 503, 'instance A to see Redis down (/ready 503)', 30000, 200)
  await eachDoor(t, 'isolated', async (t, door) => {
    const outcome = await door.writeAttempts(conns.get(door)!)[0].attempt('while-redis-is-down')
    t.ok(door.isUnavailable(outcome), `the write is refused, not acknowledged (${JSON.stringify(outcome).slice(0, 300)})`)
  })
})

// ------------------------------------------------------------------------- n

t.test(CASES.authRefused, async t => {
  const server = await build(t, { ...BASE_ENV, AUTH_SECRET: SECRET })
  const forged = createSigner({ key: 'another-secret-that-is-long-enough-0123456789', algorithm: 'HS256' })({ sub: 'mallory' })
  /** 401 for a door that takes its token with the request, or the door's own denial (Hocuspocus: in-band). */
  const refusal = async (door: Door, token?: string): Promise<string> => {
    try {
      const conn = await door.open(server, token === undefined ? {} : { token })
      await conn.close()
      return 'opened'
    } catch (err) {
      const e = err as { statusCode?: number, denied?: string, message: string }
      if (e.statusCode !== undefined) return String(e.statusCode)
      if (e.denied !== undefined) return 'denied'
      return e.message
    }
  }
  await eachDoor(t, 'authRefused', async (t, door) => {
    const refused = door.name === 'hocuspocus' ? 'denied' : '401'
    t.equal(await refusal(door), refused, `without a token: ${refused}`)
    t.equal(await refusal(door, forged), refused, `with a token signed by another key: ${refused}`)
    t.equal(await refusal(door, sign({ sub: freshName('valid') })), 'opened', 'with a valid token it opens')
    t.equal(await statusOf(server, '/health'), 200, 'the process is fine')
  })
})

// ------------------------------------------------------------------------- o

t.test(CASES.heartbeat, async t => {
  const interval = 100
  const server = await build(t, { ...BASE_ENV, HEARTBEAT_INTERVAL_MS: String(interval) })
  await eachDoor(t, 'heartbeat', async (t, door) => {
    const conn = await opened(t, door, server)
    const from = conn.heartbeats
    // heartbeats are not frames: their count is checked until it grows (the wait ends on the count, never on the clock)
    await check(t, `two heartbeats reach the idle connection (HEARTBEAT_INTERVAL_MS ${interval})`, () => waitFor(() => conn.heartbeats >= from + 2, 'two heartbeats', WAIT_MS, 10))
    t.equal(conn.closedWith, null, 'it is not closed')
    await check(t, 'and it is still served', () => conn.alive())
  })
})

// ------------------------------------------------------------------------- p

t.test(CASES.originRefused, async t => {
  const server = await build(t, { ...BASE_ENV, CORS_ORIGINS: 'http://ok.test' })
  await eachDoor(t, 'originRefused', async (t, door) => {
    t.equal(await openStatus(door, server, { origin: 'http://evil.test' }), 403, 'Origin http://evil.test: 403')
    t.equal(await openStatus(door, server, { origin: 'http://ok.test' }), 0, 'Origin http://ok.test (in CORS_ORIGINS): it opens')
    t.equal(await openStatus(door, server), 0, 'no Origin (not a browser): it opens')
  })
})

// ------------------------------------------------------------------------- q

t.test(CASES.caps, async t => {
  await eachDoor(t, 'caps', async (t, door) => {
    const server = await build(t, { ...BASE_ENV, MAX_CONNECTIONS: '3', MAX_CONNECTIONS_PER_CLIENT: '2' })
    const a = freshAddress()
    const first = await door.open(server, { address: a })
    t.teardown(() => first.close())
    await opened(t, door, server, { address: a })
    t.equal(await openStatus(door, server, { address: a }), 429, `a third connection of client key ${a}: 429`)
    await opened(t, door, server)
    t.equal(await openStatus(door, server), 503, 'a fourth connection in all (MAX_CONNECTIONS 3), from another client key: 503')
    await first.close()
    await check(t, `a slot freed by a closed connection is taken again by ${a}`, () => waitFor(async () => await openStatus(door, server, { address: a }) === 0, 'the slot to be free', WAIT_MS, 50))
  })
})

// ------------------------------------------------------------------------- r

t.test(CASES.resume, async t => {
  const env = { ...BASE_ENV, DATA_DIR: tempDir(t) }
  const first = await startServer(t, env, {})
  const before = Array.from({ length: 20 }, (_, i) => `before-${i}`)
  const away = Array.from({ length: 20 }, (_, i) => `away-${i}`)
  const after = Array.from({ length: 5 }, (_, i) => `after-${i}`)
  const conns = new Map<Door, DoorConnection>()
  for (const door of DOORS) {
    if (door.notApplicable.resume !== undefined) continue
    const conn = await opened(t, door, first, { resource: freshName(`resume-${door.name}`) })
    for (const tag of before) await conn.write(tag)
    conns.set(door, conn)
  }
  first.proc.kill('SIGTERM')
  t.same(await first.exited, { code: 0, signal: null }, 'the first server exits 0')
  const second = await startServer(t, env, {})
  await eachDoor(t, 'resume', async (t, door) => {
    const conn = conns.get(door)!
    await conn.closed
    // published while no connection was open: only the resume can deliver these
    for (const tag of away) {
      const res = await fetch(`${second.url}/api/rooms/${conn.resource}/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ data: { tag } }) })
      t.equal(res.status, 200, `published ${tag}`)
    }
    const again = await door.reopen(second, conn)
    t.teardown(() => again.close())
    for (const tag of after) await again.write(tag)
    await check(t, 'the resumed connection receives what it wrote', () => again.waitUntil(() => after.every(tag => door.delivered(again).includes(tag)), 'its own writes'))
    const got = [...door.delivered(conn), ...door.delivered(again)]
    const expected = [...before, ...away, ...after]
    t.equal(expected.filter(tag => !got.includes(tag)).length, 0, `0 gaps over ${expected.length} messages`)
    t.equal(got.length - new Set(got).size, 0, '0 duplicates')
    t.same(got, expected, 'in order')
  })
})
