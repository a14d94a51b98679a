// The guarantee matrix, part "input": what a client sends: hostile frames,
// sizes, rates, read-only principals, refused tokens and origins.
// Every promise of the contract's "Every door keeps the same promises", run
// against every door of test/support/doors.ts (and the HTTP API where it
// writes); test/support/guarantees.ts says how the matrix is split.
import t, { type Test } from 'tap'
import * as Y from 'yjs'
import { createSigner } from 'fast-jwt'
import { build, tempDir, waitFor } from './support/helper.js'
import { startServer, type ServerProcess } from './support/process.js'
import { CASES, DOORS, HTTP_BODY_LIMIT, WAIT_MS, freshName, realClientLog, HocuspocusConnection, SwitchboardConnection, type Door, type DoorConnection } from './support/doors.js'
import { BASE_ENV, READONLY_ADMIN_TOKEN, SECRET, check, closedWithin, eachDoor, isYjs, matrixFile, openStatus, opened, sign } from './support/guarantees.js'
import { documentView, documentsInMemory, statusOf } from './support/observation.js'
import { MESSAGE_TEXT_MAX_LENGTH } from '../protocol/limits.js'

matrixFile()

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

// ------------------------------------------------------------------------- p

t.test(CASES.originRefused, async t => {
  const server = await build(t, { ...BASE_ENV, CORS_ORIGINS: 'http://ok.test' })
  await eachDoor(t, 'originRefused', async (t, door) => {
    t.equal(await openStatus(door, server, { origin: 'http://evil.test' }), 403, 'Origin http://evil.test: 403')
    t.equal(await openStatus(door, server, { origin: 'http://ok.test' }), 0, 'Origin http://ok.test (in CORS_ORIGINS): it opens')
    t.equal(await openStatus(door, server), 0, 'no Origin (not a browser): it opens')
  })
})
