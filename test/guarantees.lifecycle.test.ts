// The guarantee matrix, part "lifecycle": restarts, failures and clusters:
// graceful shutdown, admin visibility, store failure, cluster-wide caps and
// order, an isolated instance, resume after a restart.
// Every promise of the contract's "Every door keeps the same promises", run
// against every door of test/support/doors.ts (and the HTTP API where it
// writes); test/support/guarantees.ts says how the matrix is split.
import t from 'tap'
import * as Y from 'yjs'
import { build, tempDir, waitFor } from './support/helper.js'
import { startServer } from './support/process.js'
import { cluster } from './support/cluster-instances.js'
import { redisTestOptions } from './support/redis-server.js'
import { tryUpgrade } from './support/ws-client.js'
import { CASES, DOORS, doorsEnv, freshAddress, freshName, PusherConnection, SwitchboardConnection, YjsConnection, SyncSub, YType, type Door, type Closed, type DoorConnection, type ServerTarget } from './support/doors.js'
import { BASE_ENV, check, closedWithin, eachDoor, envWithApps, matrixFile, openStatus, opened } from './support/guarantees.js'
import { ADMIN_TOKEN, listed, metric, statusOf } from './support/observation.js'
import type { SqliteStore } from '../plugins/store/sqlite.js'

matrixFile()

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
