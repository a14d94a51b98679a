import t from 'tap'
import { createSigner } from 'fast-jwt'
import { build, waitFor } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions } from './support/redis-server.js'
import { cluster, connect } from './support/cluster-instances.js'
import { SwitchboardClient } from '../client/index.js'
import { Auth } from '../plugins/engine/auth.js'

const ADMIN_TOKEN = 'admin-token-0123456789abcdef'
const READONLY_TOKEN = 'readonly-token-0123456789abcdef'
const SECRET = 'test-secret-that-is-long-enough-0123456789'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)
const adminEnv = { ADMIN_TOKEN, ADMIN_READONLY_TOKEN: READONLY_TOKEN, RATE_LIMIT_MAX: '100000', MAX_CONNECTIONS_PER_CLIENT: '100' }

async function call (url: string, method: string, path: string, token?: string, body?: unknown): Promise<{ status: number, body: any }> {
  const headers: Record<string, string> = {}
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: res.status, body: parsed }
}

const ADMIN_ROUTES: Array<[string, string]> = [
  ['GET', '/admin/me'],
  ['GET', '/admin/instances'],
  ['GET', '/admin/connections'],
  ['DELETE', '/admin/connections/00000000-0000-0000-0000-000000000000'],
  ['POST', '/admin/clients/alice/disconnect'],
  ['DELETE', '/admin/rooms/lobby/history']
]
const WRITES = ADMIN_ROUTES.filter(([method]) => method !== 'GET')

t.test('a static token matches only exactly: no prefix, no extension, no other case', async t => {
  const auth = new Auth(undefined, [{ token: ADMIN_TOKEN, principal: { sub: 'admin', role: 'admin' } }, { token: READONLY_TOKEN, principal: { sub: 'admin-readonly', role: 'admin-readonly' } }])
  t.same(auth.staticPrincipal(ADMIN_TOKEN), { sub: 'admin', role: 'admin' })
  t.same(auth.staticPrincipal(READONLY_TOKEN), { sub: 'admin-readonly', role: 'admin-readonly' })
  for (const wrong of [ADMIN_TOKEN.slice(0, -1), ADMIN_TOKEN + 'x', ADMIN_TOKEN.toUpperCase(), '', ' ' + ADMIN_TOKEN]) {
    t.equal(auth.staticPrincipal(wrong), undefined, `refused: ${JSON.stringify(wrong.slice(0, 8))}…`)
  }
  t.equal(new Auth(undefined, [{ token: '', principal: { sub: 'x' } }]).hasStaticTokens, false, 'an empty token is no token')
})

t.test('without ADMIN_TOKEN nor auth mode every admin route answers 404, under /api and /api/v1', async t => {
  const { url } = await build(t)
  for (const prefix of ['/api', '/api/v1']) {
    for (const [method, path] of ADMIN_ROUTES) {
      const res = await call(url, method, prefix + path, ADMIN_TOKEN)
      t.equal(res.status, 404, `${method} ${prefix}${path}`)
    }
  }
})

t.test('with ADMIN_TOKEN: 401 without or with a wrong token, the read-only token reads but every action is 403', async t => {
  const { url } = await build(t, adminEnv)
  for (const prefix of ['/api', '/api/v1']) {
    for (const [method, path] of ADMIN_ROUTES) {
      t.equal((await call(url, method, prefix + path)).status, 401, `${method} ${prefix}${path} without a token`)
      t.equal((await call(url, method, prefix + path, ADMIN_TOKEN + 'x')).status, 401, `${method} ${prefix}${path} with a wrong token`)
    }
    t.equal((await call(url, 'GET', `${prefix}/admin/instances`, READONLY_TOKEN)).status, 200, 'read-only reads instances')
    t.equal((await call(url, 'GET', `${prefix}/admin/connections`, READONLY_TOKEN)).status, 200, 'read-only reads connections')
    for (const [method, path] of WRITES) {
      const res = await call(url, method, prefix + path, READONLY_TOKEN)
      t.equal(res.status, 403, `read-only: ${method} ${prefix}${path}`)
      t.match(res.body, { code: 'forbidden', message: /read-only/ })
    }
  }
  const publish = await call(url, 'POST', '/api/rooms/lobby/publish', READONLY_TOKEN, { data: 1 })
  t.equal(publish.status, 403, 'the read-only token cannot publish either')
  t.equal((await call(url, 'POST', '/api/rooms/lobby/publish', ADMIN_TOKEN, { data: 1 })).status, 200, 'the admin token publishes as the server')
  const history = await call(url, 'GET', '/api/rooms/lobby/history', READONLY_TOKEN)
  t.equal(history.status, 200, 'the read-only token reads history')
  t.match(history.body.messages, [{ from: 'server', data: 1 }], 'published as `server`')
})

t.test('in auth mode a JWT with role admin / admin-readonly is an admin; any other token is 403', async t => {
  const { url } = await build(t, { AUTH_SECRET: SECRET, ADMIN_TOKEN, RATE_LIMIT_MAX: '100000' })
  t.equal((await call(url, 'GET', '/api/admin/instances')).status, 401, 'no token')
  t.equal((await call(url, 'GET', '/api/admin/instances', sign({ sub: 'alice' }))).status, 403, 'a user token')
  t.equal((await call(url, 'GET', '/api/admin/instances', sign({ sub: 'backend', role: 'service' }))).status, 403, 'a service token')
  t.equal((await call(url, 'GET', '/api/admin/instances', sign({ sub: 'ops', role: 'admin' }))).status, 200, 'role admin')
  t.equal((await call(url, 'GET', '/api/admin/instances', ADMIN_TOKEN)).status, 200, 'ADMIN_TOKEN also works in auth mode')
  t.equal((await call(url, 'GET', '/api/status', ADMIN_TOKEN)).status, 200, 'and on the rest of the API')
  const ro = sign({ sub: 'auditor', role: 'admin-readonly' })
  t.equal((await call(url, 'GET', '/api/admin/connections', ro)).status, 200, 'role admin-readonly reads')
  t.equal((await call(url, 'DELETE', '/api/admin/rooms/x/history', ro)).status, 403, 'and may not act')
  t.equal((await call(url, 'DELETE', '/api/admin/rooms/x/history', sign({ sub: 'ops', role: 'admin' }))).status, 200, 'role admin acts')
})

t.test('connections: cursor pagination covers every connection once; filters by client id, room and server id', async t => {
  const { url, wsUrl, app } = await build(t, adminEnv)
  const clients: TestClient[] = []
  for (let i = 0; i < 7; i++) {
    const c = await TestClient.connect(wsUrl, { clientId: i < 3 ? 'alice' : `user-${i}` })
    t.teardown(() => c.close())
    clients.push(c)
  }
  await clients[4].request({ type: 'join', room: 'ops' })
  await clients[5].request({ type: 'join', room: 'ops' })

  const seen: string[] = []
  let cursor: string | undefined
  let pages = 0
  do {
    const res = await call(url, 'GET', `/api/admin/connections?limit=3${cursor ? `&cursor=${cursor}` : ''}`, ADMIN_TOKEN)
    t.equal(res.status, 200)
    t.ok(res.body.connections.length <= 3, 'a page holds at most `limit`')
    t.equal(res.body.total, 7, 'total counts every match')
    seen.push(...res.body.connections.map((c: any) => c.connectionId))
    cursor = res.body.nextCursor
    pages++
  } while (cursor && pages < 10)
  t.equal(pages, 3, '7 connections in pages of 3')
  t.same([...seen].sort(), clients.map(c => c.welcome.connectionId).sort(), 'every connection exactly once')

  const alice = await call(url, 'GET', '/api/admin/connections?clientId=alice', ADMIN_TOKEN)
  t.equal(alice.body.connections.length, 3)
  t.ok(alice.body.connections.every((c: any) => c.clientId === 'alice' && c.serverId === app.serverId && c.protocol === 'switchboard' && typeof c.openedAt === 'string' && c.bufferedBytes === 0 && c.clientKey === '127.0.0.1'), 'the fields of each connection')
  const ops = await call(url, 'GET', '/api/admin/connections?room=ops', ADMIN_TOKEN)
  t.same(ops.body.connections.map((c: any) => c.clientId).sort(), ['user-4', 'user-5'])
  t.same(ops.body.connections[0].rooms, ['ops'])
  t.equal((await call(url, 'GET', '/api/admin/connections?serverId=someone-else', ADMIN_TOKEN)).body.total, 0, 'another server id: none here')
  t.equal((await call(url, 'GET', '/api/admin/connections?search=user-6', ADMIN_TOKEN)).body.total, 1, 'search by a piece of the client id')
  const bad = await call(url, 'GET', '/api/admin/connections?limit=0', ADMIN_TOKEN)
  t.equal(bad.status, 400)
  t.match(bad.body.message, /limit/, 'a bad limit is named')
})

t.test('disconnect: the client gets `disconnected` then a close 4001; by client id every connection; logged as admin.action without the token', async t => {
  const built = await build(t, adminEnv)
  const { url, wsUrl } = built
  const one = await TestClient.connect(wsUrl, { clientId: 'mallory' })
  const two = await TestClient.connect(wsUrl, { clientId: 'mallory' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => bob.close())

  const res = await call(built.url, 'DELETE', `/api/admin/connections/${bob.welcome.connectionId}`, ADMIN_TOKEN, { reason: 'spamming the lobby' })
  t.same(res.body, { ok: true, disconnected: 1 })
  t.match(await bob.next('disconnected'), { type: 'disconnected', reason: 'spamming the lobby' })
  t.same(await bob.closed, { code: 4001, reason: 'spamming the lobby' })

  const byClient = await call(url, 'POST', '/api/admin/clients/mallory/disconnect', ADMIN_TOKEN)
  t.same(byClient.body, { ok: true, disconnected: 2 })
  for (const c of [one, two]) {
    t.match(await c.next('disconnected'), { reason: 'disconnected by an administrator' })
    t.equal((await c.closed).code, 4001)
  }
  t.equal((await call(url, 'POST', '/api/admin/clients/mallory/disconnect', ADMIN_TOKEN)).status, 404, 'nobody left to disconnect')
  t.equal((await call(url, 'DELETE', '/api/admin/connections/nope', ADMIN_TOKEN)).status, 404)
  const badReason = await call(url, 'POST', '/api/admin/clients/x/disconnect', ADMIN_TOKEN, { reason: 'x'.repeat(101) })
  t.equal(badReason.status, 400)
  t.match(badReason.body.message, /reason/)

  await waitFor(() => built.logs().filter(l => l.event === 'admin.action').length >= 3, 'admin.action lines')
  const actions = built.logs().filter(l => l.event === 'admin.action')
  t.match(actions[0], { who: 'admin', role: 'admin', action: 'connection.disconnect', target: { connectionId: bob.welcome.connectionId }, statusCode: 200 })
  t.match(actions[1], { who: 'admin', action: 'client.disconnect', target: { clientId: 'mallory' } })
  t.notOk(built.rawLogs().includes(ADMIN_TOKEN), 'the token never appears in the logs')
})

t.test('the TypeScript client told `disconnected` reports the reason and does not reconnect on its own', async t => {
  const { url } = await build(t, adminEnv)
  const client = new SwitchboardClient({ url, clientId: 'dora', reconnect: { initialDelayMs: 10, maxDelayMs: 20 } })
  t.teardown(() => client.close())
  await client.connect()
  const room = await client.join('lobby').catch(() => null)
  t.ok(room, 'joined before the disconnect')
  const told = new Promise<{ reason: string }>(resolve => client.on('disconnected', resolve))
  const closed = new Promise<{ code: number, willReconnect: boolean }>(resolve => client.on('close', resolve))
  let reconnecting = 0
  client.on('reconnecting', () => { reconnecting++ })
  t.same((await call(url, 'POST', '/api/admin/clients/dora/disconnect', ADMIN_TOKEN, { reason: 'account suspended' })).body, { ok: true, disconnected: 1 })
  t.same(await told, { reason: 'account suspended' })
  t.match(await closed, { code: 4001, willReconnect: false })
  await new Promise(resolve => setTimeout(resolve, 500))
  t.equal(reconnecting, 0, 'no reconnect attempt')
  t.equal((await call(url, 'GET', '/api/admin/connections?clientId=dora', ADMIN_TOKEN)).body.total, 0, 'dora is not connected anywhere')
  await t.rejects(client.request({ type: 'ping' }), { code: 'disconnected' }, 'requests fail with the reason')
})

t.test('history: pages of a room for members and admins; a member of other rooms is 403; clearing tells members', async t => {
  const { url, wsUrl } = await build(t, { ...adminEnv, AUTH_SECRET: SECRET })
  const member = sign({ sub: 'alice', rooms: ['team-*'] })
  const alice = await TestClient.connect(wsUrl, { token: member })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'team-red' })
  for (let i = 1; i <= 5; i++) await alice.request({ type: 'publish', room: 'team-red', data: { n: i } })

  const last = await call(url, 'GET', '/api/rooms/team-red/history?limit=2', member)
  t.equal(last.status, 200)
  t.same(last.body.messages.map((m: any) => m.data.n), [4, 5], 'the newest two, oldest first')
  t.equal(last.body.nextBefore, 4)
  const older = await call(url, 'GET', `/api/v1/rooms/team-red/history?limit=2&before=${last.body.nextBefore}`, member)
  t.same(older.body.messages.map((m: any) => m.offset), [2, 3])
  const first = await call(url, 'GET', '/api/rooms/team-red/history?limit=2&before=2', member)
  t.same(first.body.messages.map((m: any) => m.offset), [1])
  t.equal(first.body.nextBefore, undefined, 'no older page')
  t.equal((await call(url, 'GET', '/api/rooms/secret/history', member)).status, 403, 'a room outside the claim')
  t.equal((await call(url, 'GET', '/api/rooms/team-red/history')).status, 401, 'no token')
  t.equal((await call(url, 'GET', '/api/rooms/team-red/history', ADMIN_TOKEN)).body.messages.length, 5, 'an admin reads any room')
  t.same((await call(url, 'GET', '/api/rooms/never-used/history', ADMIN_TOKEN)).body, { messages: [] })
  t.equal((await call(url, 'GET', '/api/rooms/team-red/history?limit=1001', member)).status, 400)

  t.equal((await call(url, 'DELETE', '/api/admin/rooms/team-red/history', member)).status, 403, 'a member cannot clear')
  const cleared = await call(url, 'DELETE', '/api/admin/rooms/team-red/history', ADMIN_TOKEN)
  t.same(cleared.body, { ok: true, room: 'team-red', offset: 5 })
  t.match(await alice.next('history_cleared'), { type: 'history_cleared', room: 'team-red', offset: 5, by: 'admin' })
  t.same((await call(url, 'GET', '/api/rooms/team-red/history', member)).body, { messages: [] }, 'the history is gone')
  t.match(await alice.request({ type: 'publish', room: 'team-red', data: { n: 6 } }), { type: 'ack', offset: 6 }, 'offsets continue')
  t.same((await call(url, 'GET', '/api/rooms/team-red/history', member)).body.messages.map((m: any) => m.offset), [6])
})

t.test('two instances on Redis: instances, connections of both, and a disconnect through the other instance', redisTestOptions(), async t => {
  const { redis, instances: [a, b] } = await cluster(t, 2, { ADMIN_TOKEN })
  const onA = await connect(t, a.wsUrl, 'ann')
  const onB = await connect(t, b.wsUrl, 'ben')
  const onB2 = await connect(t, b.wsUrl, 'ben')
  await onB.request({ type: 'join', room: 'lobby' })

  const instances = await call(a.url, 'GET', '/api/admin/instances', ADMIN_TOKEN)
  t.equal(instances.status, 200)
  t.same(instances.body.instances.map((i: any) => i.serverId).sort(), [onA.welcome.serverId, onB.welcome.serverId].sort(), 'both instances, asked from one')
  const fromB = instances.body.instances.find((i: any) => i.serverId === onB.welcome.serverId)
  t.match(fromB, { connections: 2, clients: 1, rooms: 1, redis: 'ready', version: String, uptimeSeconds: Number, eventLoopLagMs: { mean: Number }, memory: { rssBytes: Number }, messages: { inPerSecond: Number } })

  const all = await call(a.url, 'GET', '/api/admin/connections', ADMIN_TOKEN)
  t.equal(all.body.total, 3)
  t.same(all.body.connections.map((c: any) => c.connectionId).sort(), [onA, onB, onB2].map(c => c.welcome.connectionId).sort(), 'every connection of the cluster')
  const pageOne = await call(a.url, 'GET', '/api/admin/connections?limit=2', ADMIN_TOKEN)
  const pageTwo = await call(a.url, 'GET', `/api/admin/connections?limit=2&cursor=${pageOne.body.nextCursor}`, ADMIN_TOKEN)
  t.same([...pageOne.body.connections, ...pageTwo.body.connections].map((c: any) => c.connectionId), all.body.connections.map((c: any) => c.connectionId), 'pages across instances, in order')
  t.equal(pageTwo.body.nextCursor, undefined)
  const onlyB = await call(a.url, 'GET', `/api/admin/connections?serverId=${onB.welcome.serverId}`, ADMIN_TOKEN)
  t.same(onlyB.body.connections.map((c: any) => c.clientId), ['ben', 'ben'], 'filtered by server id')
  const lobby = await call(b.url, 'GET', '/api/admin/connections?room=lobby', ADMIN_TOKEN)
  t.same(lobby.body.connections.map((c: any) => c.connectionId), [onB.welcome.connectionId], 'filtered by room')

  const res = await call(a.url, 'POST', '/api/admin/clients/ben/disconnect', ADMIN_TOKEN, { reason: 'maintenance' })
  t.same(res.body, { ok: true, disconnected: 2 }, 'both of ben\'s connections, held by the other instance')
  t.match(await onB.next('disconnected'), { reason: 'maintenance' })
  t.equal((await onB2.closed).code, 4001)
  const single = await call(b.url, 'DELETE', `/api/admin/connections/${onA.welcome.connectionId}`, ADMIN_TOKEN)
  t.same(single.body, { ok: true, disconnected: 1 }, 'one connection, through the instance that does not hold it')
  t.equal((await onA.closed).code, 4001)
  await waitFor(async () => (await call(a.url, 'GET', '/api/admin/connections', ADMIN_TOKEN)).body.total === 0, 'no connection left', 5000, 100)

  // without Redis the other instances cannot be asked: 503, and it works again when Redis is back
  await redis.kill()
  await waitFor(async () => (await call(a.url, 'GET', '/api/admin/instances', ADMIN_TOKEN)).status === 503, 'a 503 while redis is down', 10000, 200)
  t.match((await call(a.url, 'GET', '/api/admin/connections', ADMIN_TOKEN)).body, { statusCode: 503, code: 'unavailable', message: /redis/ })
  await redis.restart()
  await waitFor(async () => (await call(a.url, 'GET', '/api/admin/instances', ADMIN_TOKEN)).body.instances?.length === 2, 'both instances again after redis is back', 20000, 250)
  t.pass('both instances answer again')
})
