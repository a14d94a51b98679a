import t from 'tap'
import { createSigner } from 'fast-jwt'
import { build, waitFor } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'
import { accessTo, allows, maySendAs } from '../plugins/engine/access.js'
import { VerifiedTokens } from '../plugins/engine/verified-tokens.js'
import { authenticatesInProtocol, concretePath, isPublic, send, spellings, upgrade, watchRoutes, type SeenRoute } from './support/route-spellings.js'

const SECRET = 'test-secret-that-is-long-enough-0123456789'
const sign = (claims: Record<string, unknown>, key = SECRET) => createSigner({ key, algorithm: 'HS256' })(claims)
const now = () => Math.floor(Date.now() / 1000)
const env = { AUTH_SECRET: SECRET, CORS_ORIGINS: 'http://localhost:3000' }

async function post (url: string, body: unknown, token?: string) {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const res = await fetch(`${url}/api/send`, { method: 'POST', headers, body: JSON.stringify(body) })
  return { status: res.status, body: await res.json() as any }
}

t.test('missing, malformed, wrong-secret and expired tokens get 401 before the upgrade and on /api/*', async t => {
  const { wsUrl, url } = await build(t, env)
  const bad: Array<[string, Record<string, string> | undefined, Record<string, string> | undefined]> = [
    ['missing', undefined, undefined],
    ['malformed header', { authorization: 'Basic dXNlcjpwYXNz' }, undefined],
    ['malformed token', { authorization: 'Bearer not-a-jwt' }, undefined],
    ['malformed query token', undefined, { token: 'abc.def' }],
    ['wrong secret', { authorization: `Bearer ${sign({ sub: 'alice' }, 'another-secret')}` }, undefined],
    ['wrong secret in query', undefined, { token: sign({ sub: 'alice' }, 'another-secret') }],
    ['expired', { authorization: `Bearer ${sign({ sub: 'alice', exp: now() - 10 })}` }, undefined],
    ['alg none', { authorization: `Bearer ${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"sub":"alice"}').toString('base64url')}.` }, undefined],
    ['no sub claim', { authorization: `Bearer ${sign({ role: 'service' })}` }, undefined]
  ]
  for (const [what, headers, query] of bad) {
    const up = await tryUpgrade(wsUrl, { headers, query })
    t.equal(up.status, 401, `upgrade: ${what}`)
    t.match(up.body, { statusCode: 401, error: 'Unauthorized', message: String }, `upgrade body: ${what}`)
    for (const path of ['/api/status', '/api/v1/status']) {
      const res = await fetch(`${url}${path}`, { headers })
      t.equal(res.status, 401, `${path}: ${what}`)
      t.match(await res.json(), { statusCode: 401, error: 'Unauthorized' })
    }
  }
  const sendRes = await post(url, { from: 'alice', to: 'bob', text: 'hi' })
  t.equal(sendRes.status, 401, 'POST /api/send without a token')
  t.equal((await fetch(`${url}/health`)).status, 200, '/health needs no token')
})

t.test('a valid token upgrades by header or ?token=, and its sub is the client id', async t => {
  const { wsUrl, url } = await build(t, env)
  const token = sign({ sub: 'alice', exp: now() + 600 })
  const byQuery = await TestClient.connect(wsUrl, { token, clientId: 'mallory' })
  t.teardown(() => byQuery.close())
  t.equal(byQuery.welcome.clientId, 'alice', 'the clientId query parameter cannot override sub')
  const byHeader = await TestClient.connect(wsUrl, { headers: { authorization: `Bearer ${token}` } })
  t.teardown(() => byHeader.close())
  t.equal(byHeader.welcome.clientId, 'alice')
  const res = await fetch(`${url}/api/status`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 200)

  const bob = await TestClient.connect(wsUrl, { token: sign({ sub: 'bob' }) })
  t.teardown(() => bob.close())
  await byQuery.request({ type: 'send', to: 'bob', text: 'hello' })
  t.equal((await bob.next('message')).from, 'alice', 'a WebSocket sender is always its own sub')
})

t.test('a user token may only send as its own sub; a service token may send as anyone', async t => {
  const { url } = await build(t, env)
  const alice = sign({ sub: 'alice' })
  const forged = await post(url, { from: 'bob', to: 'carol', text: 'I am bob' }, alice)
  t.equal(forged.status, 403, 'impersonation via from')
  t.match(forged.body, { statusCode: 403, error: 'Forbidden' })
  t.equal((await post(url, { from: 'alice', to: 'carol', text: 'I am alice' }, alice)).status, 200)
  const service = sign({ sub: 'backend', role: 'service' })
  t.equal((await post(url, { from: 'bob', to: 'carol', text: 'on behalf of bob' }, service)).status, 200)
})

t.test('the rooms claim allows exact names and prefixes ending in *', async t => {
  t.equal(accessTo(null, 'anything'), 'write', 'open mode')
  t.equal(accessTo({ sub: 'a' }, 'anything'), 'write', 'no claim')
  const p = { sub: 'a', rooms: ['lobby', 'team-*'] }
  t.equal(accessTo(p, 'lobby'), 'write')
  t.equal(accessTo(p, 'lobby2'), null, 'an exact name is not a prefix')
  t.equal(accessTo(p, 'team-red'), 'write')
  t.equal(accessTo(p, 'team-'), 'write')
  t.equal(accessTo(p, 'team'), null)
  t.equal(accessTo(p, 'other'), null)
  t.equal(accessTo({ sub: 'a', rooms: [] }, 'lobby'), null, 'an empty list allows nothing')
  t.equal(accessTo({ sub: 'a', rooms: ['*'] }, 'x'), 'write')
  const reader = { sub: 'r', rooms: ['read:docs-*', 'read:lobby', 'docs-mine'] }
  t.equal(accessTo(reader, 'docs-shared'), 'read', '`read:` makes an entry read-only, prefixes too')
  t.equal(accessTo(reader, 'lobby'), 'read')
  t.equal(accessTo(reader, 'docs-mine'), 'write', 'a write entry beats a read one that covers the same name')
  t.equal(accessTo({ sub: 'r', rooms: ['read:*'] }, 'anything'), 'read')
  t.equal(accessTo({ sub: 'ops', role: 'admin-readonly' }, 'lobby'), 'read', 'the read-only operator reads every room')
  t.equal(accessTo({ sub: 'ops', role: 'admin-readonly', rooms: ['lobby'] }, 'lobby'), 'read', 'and never writes, whatever its claim')
  t.ok(allows('read', 'join') && allows('read', 'read') && !allows('read', 'publish') && !allows('read', 'update') && !allows('read', 'exec'), 'read access joins and reads, never writes')
  t.ok(allows('write', 'publish') && !allows(null, 'join'), 'write access does all; none does nothing')
  t.equal(maySendAs({ sub: 'ops', role: 'admin-readonly' }, 'ops'), false, 'the read-only operator sends nothing, not even as itself')
  t.equal(maySendAs({ sub: 'svc', role: 'service' }, 'anyone'), true)
  t.equal(maySendAs({ sub: 'alice' }, 'bob'), false)
})

t.test('the rooms claim is enforced on exec over a real connection (forbidden)', async t => {
  const { wsUrl } = await build(t, { ...env, ENABLE_CODE_EXECUTION: 'true' })
  const c = await TestClient.connect(wsUrl, { token: sign({ sub: 'alice', rooms: ['team-*'] }) })
  t.teardown(() => c.close())
  const err = await c.request({ type: 'exec', room: 'secret', code: '1' })
  t.match(err, { type: 'error', code: 'forbidden' })
  const allowed = await c.request({ type: 'exec', room: 'team-red', code: '1' })
  t.match(allowed, { type: 'error', code: 'not_in_room' }, 'an allowed room gets past the claim check to the membership check')
})

t.test('the rooms claim is enforced on join, publish and update, and on the HTTP room API', async t => {
  const { wsUrl, url } = await build(t, env)
  const token = sign({ sub: 'alice', rooms: ['team-*'] })
  const c = await TestClient.connect(wsUrl, { token })
  t.teardown(() => c.close())
  t.match(await c.request({ type: 'join', room: 'secret' }), { type: 'error', code: 'forbidden' })
  t.match(await c.request({ type: 'publish', room: 'secret', data: 1 }), { type: 'error', code: 'forbidden' })
  t.match(await c.request({ type: 'update', room: 'secret', patch: { a: 1 } }), { type: 'error', code: 'forbidden' })
  t.match(await c.request({ type: 'join', room: 'team-red' }), { type: 'joined', room: 'team-red' })
  t.match(await c.request({ type: 'publish', room: 'team-red', data: 1 }), { type: 'ack', offset: 1 })

  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` }
  const denied = await fetch(`${url}/api/rooms/secret/publish`, { method: 'POST', headers, body: JSON.stringify({ data: 1 }) })
  t.equal(denied.status, 403)
  t.equal((await fetch(`${url}/api/rooms/secret`, { headers })).status, 403)
  const ok = await fetch(`${url}/api/rooms/team-red/publish`, { method: 'POST', headers, body: JSON.stringify({ data: 2 }) })
  t.equal(ok.status, 200)
  t.match(await c.next('room_message'), { room: 'team-red', data: 1 })
  t.match(await c.next('room_message'), { room: 'team-red', data: 2, from: 'alice' })
})

t.test('a connection is closed with 1008 when its token expires', async t => {
  const { wsUrl } = await build(t, env)
  const c = await TestClient.connect(wsUrl, { token: sign({ sub: 'alice', exp: now() + 2 }) })
  const longLived = await TestClient.connect(wsUrl, { token: sign({ sub: 'bob', exp: now() + 600 }) })
  t.teardown(() => longLived.close())
  const started = Date.now()
  const closed = await c.closed
  t.equal(closed.code, 1008)
  t.match(closed.reason, /expired/)
  t.ok(Date.now() - started <= 3500, 'closed within a second or so of exp')
  t.ok(longLived.open, 'a connection with a later exp stays open')
  t.equal((await longLived.request({ type: 'ping' })).type, 'pong')
})

t.test('a token remembered from an earlier request is refused once it expires, on HTTP and at the upgrade', async t => {
  const { wsUrl, url, app } = await build(t, env)
  const token = sign({ sub: 'alice', exp: now() + 2 })
  const status = async () => (await fetch(`${url}/api/status`, { headers: { authorization: `Bearer ${token}` } })).status
  t.equal(await status(), 200, 'verified on its first request')
  t.equal(app.auth.verified.size, 1, 'and remembered')
  t.equal(await status(), 200, 'answered from the remembered verification')
  // the engine closes a session at its token's exp: that close is the moment the token stops being valid
  const c = await TestClient.connect(wsUrl, { token })
  const closed = await c.closed
  t.equal(closed.code, 1008, 'the session closed at exp')
  const res = await fetch(`${url}/api/status`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 401, 'refused after its exp although it was remembered')
  t.match(await res.json(), { message: 'token expired' })
  t.equal((await tryUpgrade(wsUrl, { headers: { authorization: `Bearer ${token}` } })).status, 401, 'and at the upgrade')
  t.equal(app.auth.verified.size, 0, 'the expired entry is gone')
})

t.test('remembered tokens: an entry lives until exp (plus the clock skew) or maxAgeMs, the oldest goes first, clear forgets all', async t => {
  let clock = 1_000_000
  const tokens = new VerifiedTokens({ maxEntries: 2, maxAgeMs: 60_000, clockSkewS: 5, now: () => clock })
  tokens.set('a', { sub: 'a', exp: 1_010 })
  t.same(tokens.get('a'), { sub: 'a', exp: 1_010 })
  clock = 1_014_999
  t.ok(tokens.get('a'), 'within exp plus the skew')
  clock = 1_015_000
  t.equal(tokens.get('a'), undefined, 'not from exp plus the skew on')
  t.equal(tokens.size, 0)
  tokens.set('old', { sub: 'old', exp: 1_000 })
  t.equal(tokens.size, 0, 'a token already past its exp is not remembered')
  tokens.set('b', { sub: 'b' })
  clock += 59_999
  t.ok(tokens.get('b'), 'without exp: until maxAgeMs')
  clock += 1
  t.equal(tokens.get('b'), undefined, 'and not longer')
  tokens.set('c', { sub: 'c' })
  tokens.set('d', { sub: 'd' })
  tokens.set('e', { sub: 'e' })
  t.equal(tokens.size, 2, 'bounded by maxEntries')
  t.equal(tokens.get('c'), undefined, 'the oldest went first')
  t.ok(tokens.get('d'))
  tokens.clear()
  t.equal(tokens.get('e'), undefined, 'clear forgets every token')
  const off = new VerifiedTokens({ maxEntries: 0, now: () => clock })
  off.set('x', { sub: 'x' })
  t.equal(off.get('x'), undefined, 'maxEntries 0 remembers nothing')
})

t.test('an invalid token is never remembered: the same string is refused every time', async t => {
  const { url, app } = await build(t, env)
  const wrong = sign({ sub: 'alice', exp: now() + 600 }, 'another-secret-another-secret-0123456789')
  for (let i = 0; i < 3; i++) {
    t.equal((await fetch(`${url}/api/status`, { headers: { authorization: `Bearer ${wrong}` } })).status, 401, `refused, attempt ${i + 1}`)
  }
  t.equal(app.auth.verified.size, 0)
})

t.test('open mode logs a warning at start; auth mode does not', async t => {
  const open = await build(t)
  t.ok(open.logs().some(l => l.event === 'auth.open_mode' && l.level === 40), 'auth.open_mode warning')
  const secured = await build(t, env)
  t.notOk(secured.logs().some(l => l.event === 'auth.open_mode'))
})

t.test('a token never appears in the logs, accepted or refused, in a header or the query string', async t => {
  const built = await build(t, { ...env, LOG_LEVEL: 'trace' })
  const good = sign({ sub: 'alice', exp: now() + 600 })
  const wrong = sign({ sub: 'alice' }, 'another-secret')
  const expired = sign({ sub: 'alice', exp: now() - 5 })
  const c = await TestClient.connect(built.wsUrl, { token: good })
  await c.request({ type: 'ping' })
  await c.close()
  await tryUpgrade(built.wsUrl, { query: { token: wrong } })
  await tryUpgrade(built.wsUrl, { headers: { authorization: `Bearer ${expired}` } })
  await tryUpgrade(built.wsUrl, { headers: { authorization: `Bearer ${good}`, origin: 'http://evil.com' } })
  await fetch(`${built.url}/api/status?token=${wrong}`, { headers: { authorization: `Bearer ${good}` } })
  await fetch(`${built.url}/api/status`, { headers: { authorization: `Bearer ${wrong}` } })
  await post(built.url, { from: 'bob', to: 'x', text: 'y' }, good)
  await waitFor(() => built.logs().some(l => l.event === 'connection.close'), 'the close log line')
  const raw = built.rawLogs()
  t.ok(raw.length > 1000, `captured ${raw.split('\n').length} log lines`)
  for (const token of [good, wrong, expired]) {
    const signature = token.split('.')[2]
    t.notOk(raw.includes(token), 'the token does not appear')
    t.notOk(raw.includes(signature), 'nor its signature')
  }
  t.notOk(raw.includes(SECRET), 'nor the secret')
  t.ok(raw.includes('[REDACTED]'), 'the places a token would be say [REDACTED]')
})

t.test('every spelling of every protected route the router accepts is refused 401 without a token, /ws upgrade included', async t => {
  const seen: SeenRoute[] = []
  const { port, url } = await build(t, { ...env, RATE_LIMIT_MAX: '100000' }, { before: watchRoutes(seen) })
  const token = sign({ sub: 'alice', role: 'service' })
  const authorization = `Bearer ${token}`
  const protectedRoutes = seen.filter(r => !isPublic(r) && !authenticatesInProtocol(r))
  t.same([...new Set(seen.filter(authenticatesInProtocol).map(r => r.url))], ['/collab'], 'only Hocuspocus authenticates after the upgrade')
  const names = protectedRoutes.map(r => `${r.method} ${r.url}`)
  for (const expected of ['GET /ws', 'POST /api/send', 'POST /api/v1/send', 'GET /api/status', 'GET /api/v1/rooms/:room', 'PATCH /api/v1/rooms/:room/state', 'GET /api/v1/rooms/:room/history', 'GET /api/admin/connections', 'DELETE /api/v1/admin/connections/:connectionId', 'POST /api/admin/clients/:clientId/disconnect', 'DELETE /api/v1/admin/rooms/:room/history']) {
    t.ok(names.includes(expected), `${expected} is among the ${names.length} protected routes`)
  }
  let accepted = 0
  let encodedAccepted = 0
  const leaks: string[] = []
  for (const route of protectedRoutes) {
    for (const target of spellings(concretePath(route.url), url)) {
      if (route.websocket) {
        if (route.method !== 'GET') continue
        const withToken = await upgrade(port, target, { authorization })
        if (withToken.status !== 101) continue
        accepted++
        if (target.includes('%')) encodedAccepted++
        for (const bare of [target, `${target}${target.includes('?') ? '&' : '?'}clientId=alice`]) {
          const without = await upgrade(port, bare)
          if (without.status !== 401) leaks.push(`upgrade ${bare}: ${without.status}`)
        }
        continue
      }
      const withToken = await send(port, route.method, target, { authorization })
      if (withToken.route !== route.url) continue // the router did not take this spelling for this route
      accepted++
      if (target.includes('%')) encodedAccepted++
      const without = await send(port, route.method, target)
      if (without.status !== 401 || without.route !== route.url) leaks.push(`${route.method} ${target}: ${without.status} from ${without.route}`)
    }
  }
  t.same(leaks, [], 'no spelling gets past without a token')
  t.ok(encodedAccepted > protectedRoutes.length * 5, `percent-encoded spellings reach the routes (${encodedAccepted} of ${accepted} accepted spellings), so the test exercises them`)
  t.ok(accepted >= protectedRoutes.length, `${accepted} accepted spellings of ${protectedRoutes.length} protected routes, each refused without a token`)
})

t.test('a token in a percent-encoded ?%74oken= is a token for the router, and verified as one', async t => {
  const { port } = await build(t, env)
  const good = sign({ sub: 'alice' })
  t.equal((await upgrade(port, `/ws?%74oken=${good}`)).status, 101, 'a valid token upgrades')
  t.equal((await upgrade(port, `/ws?%74oken=${sign({ sub: 'alice' }, 'another-secret')}`)).status, 401, 'a forged one does not')
  t.equal((await upgrade(port, `/%77s?%74oken=${good}`)).status, 101)
})

t.test('admin routes, every spelling: 404 without admin configured; with ADMIN_TOKEN in open mode 401 without it and 403 for the read-only token on an action', async t => {
  const ADMIN = 'spelling-admin-token-0123456789'
  const READONLY = 'spelling-readonly-token-0123456789'
  const seen: SeenRoute[] = []
  const { port, url } = await build(t, { ADMIN_TOKEN: ADMIN, ADMIN_READONLY_TOKEN: READONLY, RATE_LIMIT_MAX: '100000' }, { before: watchRoutes(seen) })
  const adminRoutes = seen.filter(r => /^\/api(\/v1)?\/admin\//.test(r.url))
  t.ok(adminRoutes.length >= 12, `${adminRoutes.length} admin routes (under /api and /api/v1)`)
  const bare = await build(t, { RATE_LIMIT_MAX: '100000' })
  const leaks: string[] = []
  let accepted = 0
  for (const route of adminRoutes) {
    const write = route.method !== 'GET' && route.method !== 'HEAD'
    for (const target of spellings(concretePath(route.url), url)) {
      const withToken = await send(port, route.method, target, { authorization: `Bearer ${ADMIN}` })
      if (withToken.route !== route.url) continue
      accepted++
      const without = await send(port, route.method, target)
      if (without.status !== 401) leaks.push(`${route.method} ${target} without a token: ${without.status}`)
      const readOnly = await send(port, route.method, target, { authorization: `Bearer ${READONLY}` })
      if (write && readOnly.status !== 403) leaks.push(`${route.method} ${target} read-only: ${readOnly.status}`)
      if (!write && readOnly.status !== 200) leaks.push(`${route.method} ${target} read-only read: ${readOnly.status}`)
      const unconfigured = await send(bare.port, route.method, target.replace(url, bare.url), { authorization: `Bearer ${ADMIN}` })
      // an absolute-form target is refused before routing (403, no route) on any server
      const refusedBeforeRouting = unconfigured.status === 403 && unconfigured.route === '' && target.startsWith('http')
      if (unconfigured.status !== 404 && !refusedBeforeRouting) leaks.push(`${route.method} ${target} without admin configured: ${unconfigured.status}`)
    }
  }
  t.same(leaks, [], 'no spelling of an admin route gets past its gate, and none exists unconfigured')
  t.ok(accepted > adminRoutes.length * 5, `${accepted} accepted spellings of ${adminRoutes.length} admin routes checked`)
})
