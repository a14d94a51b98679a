// The guarantee matrix, part "connections": what a connection lives through: a
// full send buffer, a dead peer, an expiring token, heartbeats, connection
// caps.
// Every promise of the contract's "Every door keeps the same promises", run
// against every door of test/support/doors.ts (and the HTTP API where it
// writes); test/support/guarantees.ts says how the matrix is split.
import t from 'tap'
import { build, tempDir, waitFor } from './support/helper.js'
import { startServer } from './support/process.js'
import { CASES, WAIT_MS, freshAddress, freshName } from './support/doors.js'
import { BASE_ENV, SECRET, check, closedWithin, eachDoor, matrixFile, openStatus, opened, sign } from './support/guarantees.js'
import { listed, metric, statusOf } from './support/observation.js'

matrixFile()

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
