import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { createSigner } from 'fast-jwt'
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose'
import { HocuspocusProvider } from '@hocuspocus/provider'
import { build, waitFor, type TestContext } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'
import { synced, yEditor } from './support/yjs-editors.js'

const ISSUER = 'https://issuer.test/'
const AUDIENCE = 'switchboard'
const now = () => Math.floor(Date.now() / 1000)

interface TestKey { kid: string, alg: string, privateKey: CryptoKey, jwk: JWK }

async function makeKey (kid: string, alg: 'RS256' | 'ES256' | 'EdDSA'): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg)
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } }
}

/** A token signed with `key`, for ISSUER and AUDIENCE unless the claims say otherwise. */
async function sign (key: TestKey, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): Promise<string> {
  const { iss = ISSUER, aud = AUDIENCE, exp = now() + 600, ...rest } = claims
  const jwt = new SignJWT({ sub: 'alice', ...rest }).setProtectedHeader({ alg: key.alg, kid: key.kid, ...header }).setIssuedAt().setExpirationTime(exp as number)
  if (iss !== null) jwt.setIssuer(iss as string)
  if (aud !== null) jwt.setAudience(aud as string)
  return await jwt.sign(key.privateKey)
}

/** A real JWKS endpoint: serves `keys` (or 500 while `failing`), counts the requests. */
async function jwksServer (t: TestContext, keys: TestKey[]) {
  const state = { keys, failing: false, requests: 0 }
  const server = http.createServer((req, res) => {
    state.requests++
    if (state.failing) {
      res.writeHead(500).end('down')
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys.map(k => k.jwk) }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  return { state, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json` }
}

const status = async (url: string, token: string) => (await fetch(`${url}/api/status`, { headers: { authorization: `Bearer ${token}` } }))

async function refusal (url: string, token: string): Promise<{ status: number, message: string }> {
  const res = await status(url, token)
  return { status: res.status, message: ((await res.json()) as { message: string }).message }
}

t.test('RS256, ES256 and EdDSA tokens from a JWKS open /ws, the HTTP API, y-websocket and Hocuspocus', async t => {
  const rs = await makeKey('rs-1', 'RS256')
  const es = await makeKey('es-1', 'ES256')
  const ed = await makeKey('ed-1', 'EdDSA')
  const jwks = await jwksServer(t, [rs, es, ed])
  const { url, wsUrl, rawLogs, logs } = await build(t, { AUTH_JWKS_URL: jwks.url, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE })
  t.equal(jwks.state.requests, 1, 'the key set is fetched once at start')
  t.ok(logs().some(l => l.event === 'auth.jwks_fetched' && l.keys === 3), 'the fetch is logged with its key count')

  const tokens: string[] = []
  for (const [key, sub] of [[rs, 'rs-user'], [es, 'es-user'], [ed, 'ed-user']] as const) {
    const token = await sign(key, { sub, rooms: ['team-*'] })
    tokens.push(token)
    const client = await TestClient.connect(wsUrl, { token })
    t.equal(client.welcome.clientId, sub, `${key.alg}: /ws welcomes the token's sub`)
    const joined = await client.request({ type: 'join', room: 'team-a' })
    t.equal(joined.type, 'joined', `${key.alg}: the rooms claim is read`)
    const denied = await client.request({ type: 'join', room: 'other' })
    t.match(denied, { type: 'error', code: 'forbidden' }, `${key.alg}: a room outside the claim is refused`)
    await client.close()
    t.equal((await status(url, token)).status, 200, `${key.alg}: the HTTP API accepts it`)
  }

  const editor = yEditor(t, url, 'team-doc', { token: tokens[0] })
  await synced(editor, 'y-websocket to sync with an RS256 token in ?token=')
  t.pass('y-websocket /yjs/team-doc?token= syncs with an RS256 token')

  const doc = new Y.Doc()
  const provider = new HocuspocusProvider({ url: `${wsUrl.replace(/\/ws$/, '')}/collab`, ...({ WebSocketPolyfill: WebSocket } as object), name: 'team-doc', document: doc, token: tokens[1] })
  t.teardown(() => { provider.destroy(); doc.destroy() })
  await waitFor(() => provider.synced, 'Hocuspocus to sync with an ES256 token (in-band Auth, verified asynchronously)')
  t.pass('Hocuspocus authenticates an ES256 token in-band')

  const outsider = new HocuspocusProvider({ url: `${wsUrl.replace(/\/ws$/, '')}/collab`, ...({ WebSocketPolyfill: WebSocket } as object), name: 'team-doc', document: new Y.Doc(), token: await sign(rs, { iss: 'https://evil.test/' }) })
  t.teardown(() => outsider.destroy())
  t.match(await new Promise<string>(resolve => outsider.on('authenticationFailed', ({ reason }: { reason: string }) => resolve(reason))), /issuer .*AUTH_ISSUER/, 'Hocuspocus names the cause')

  const up = await tryUpgrade(wsUrl, { query: { token: await sign(rs, { exp: now() - 60 }) } })
  t.equal(up.status, 401, 'an expired RS256 token is refused before the upgrade')
  t.match(up.body.message, /token expired/)

  for (const token of tokens) t.notOk(rawLogs().includes(token), 'no token ever reaches the logs')
})

t.test('issuer, audience and algorithm are checked and named; HS256 keeps working beside a JWKS', async t => {
  const rs = await makeKey('rs-1', 'RS256')
  const jwks = await jwksServer(t, [rs])
  const SECRET = 'a-secret-that-is-long-enough-0123456789'
  const { url, wsUrl } = await build(t, { AUTH_JWKS_URL: jwks.url, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: `other, ${AUDIENCE}`, AUTH_SECRET: SECRET, RATE_LIMIT_MAX: '1000' })

  t.match(await refusal(url, await sign(rs, { iss: 'https://evil.test/' })), { status: 401, message: /issuer \(iss\) is not the one this server trusts \(AUTH_ISSUER\)/ }, 'wrong iss')
  t.match(await refusal(url, await sign(rs, { iss: null })), { status: 401, message: /AUTH_ISSUER/ }, 'no iss')
  t.match(await refusal(url, await sign(rs, { aud: 'someone-else' })), { status: 401, message: /audience \(aud\) does not include this server \(AUTH_AUDIENCE\)/ }, 'wrong aud')
  t.equal((await status(url, await sign(rs, { aud: 'other' }))).status, 200, 'any audience of the AUTH_AUDIENCE list is accepted')
  t.match(await refusal(url, await sign(rs, { exp: now() - 60 })), { status: 401, message: 'token expired' }, 'expired')

  // a token signed with another key that claims a known kid: the signature fails
  const impostor = await makeKey('rs-1', 'RS256')
  t.match(await refusal(url, await sign(impostor)), { status: 401, message: /signature verification failed/ }, 'a forged signature under a known kid')

  const header = Buffer.from(JSON.stringify({ alg: 'HS512', typ: 'JWT' })).toString('base64url')
  t.match(await refusal(url, `${header}.${Buffer.from('{"sub":"alice"}').toString('base64url')}.c2ln`), { status: 401, message: /token algorithm HS512 is not allowed \(AUTH_ALGORITHMS: HS256, RS256/ }, 'an algorithm outside the list')

  // HS256 with AUTH_SECRET, exactly as before: no issuer or audience asked of it
  const hs = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'service-1', role: 'service' })
  const client = await TestClient.connect(wsUrl, { token: hs })
  t.equal(client.welcome.clientId, 'service-1', 'an HS256 token still opens /ws')
  await client.close()
  t.equal((await status(url, hs)).status, 200, 'and the HTTP API')
})

t.test('key rotation: a new kid is fetched on first sight, a removed key is refused after the next fetch', async t => {
  const k1 = await makeKey('k1', 'RS256')
  const k2 = await makeKey('k2', 'ES256')
  const jwks = await jwksServer(t, [k1])
  // no cooldown: every unknown kid may refetch (the flood test below checks the bound)
  const { url, wsUrl, logs } = await build(t, { AUTH_JWKS_URL: jwks.url, AUTH_JWKS_COOLDOWN_MS: '0', AUTH_JWKS_REFRESH_MS: '1000', RATE_LIMIT_MAX: '1000' })
  const old = await sign(k1, { sub: 'old-key' })
  t.equal((await status(url, old)).status, 200, 'a k1 token is accepted')
  t.equal((await status(url, old)).status, 200, 'and again, from its remembered verification')

  jwks.state.keys = [k1, k2]
  const before = jwks.state.requests
  const client = await TestClient.connect(wsUrl, { token: await sign(k2, { sub: 'new-key' }) })
  t.equal(client.welcome.clientId, 'new-key', 'a token with the new kid is accepted at once')
  t.ok(jwks.state.requests > before, 'after a refetch caused by its unknown kid')
  await client.close()

  // k1 retired at the issuer: the scheduled refresh drops it
  jwks.state.keys = [k2]
  const seen = jwks.state.requests
  await waitFor(() => jwks.state.requests > seen && logs().filter(l => l.event === 'auth.jwks_fetched' && l.why === 'schedule').length > 0, 'the scheduled refresh')
  await waitFor(async () => (await status(url, old)).status === 401, 'the removed key to be refused', Infinity, 100)
  t.match(await refusal(url, old), { status: 401, message: /no key of the key set \(AUTH_JWKS_URL\) matches this token's kid/ }, 'a token of the removed key is refused, naming why')
  t.equal((await status(url, await sign(k2))).status, 200, 'k2 tokens still pass')
})

t.test('a flood of unknown kids, or an issuer that is down, never refetches more than once per cooldown', async t => {
  const k1 = await makeKey('k1', 'RS256')
  const jwks = await jwksServer(t, [k1])
  const { url, wsUrl } = await build(t, { AUTH_JWKS_URL: jwks.url, AUTH_JWKS_COOLDOWN_MS: '60000', RATE_LIMIT_MAX: '10000' })
  t.equal(jwks.state.requests, 1)
  const forged = await makeKey('k1', 'RS256')
  const answers = await Promise.all(Array.from({ length: 100 }, async (_, i) => {
    const token = await sign({ ...forged, kid: `forged-${i}` })
    return i % 2 === 0 ? (await status(url, token)).status : (await tryUpgrade(wsUrl, { query: { token } })).status
  }))
  t.ok(answers.every(s => s === 401), '100 tokens with unknown kids are refused (HTTP and upgrade)')
  t.equal(jwks.state.requests, 1, 'and the issuer was asked nothing more within the cooldown')
  t.equal((await status(url, await sign(k1))).status, 200, 'a real token still passes')

  // an issuer that is down at start: the failure is remembered, tokens do not retry it
  const down = await jwksServer(t, [k1])
  down.state.failing = true
  const second = await build(t, { AUTH_JWKS_URL: down.url, AUTH_JWKS_COOLDOWN_MS: '60000', RATE_LIMIT_MAX: '10000' })
  t.equal(down.state.requests, 1, 'the start fetch failed once')
  t.ok(second.logs().some(l => l.event === 'auth.jwks_fetch_failed' && l.why === 'start'), 'and was logged')
  const refused = await Promise.all(Array.from({ length: 50 }, async () => await refusal(second.url, await sign(k1))))
  t.ok(refused.every(r => r.status === 401 && /could not be fetched yet/.test(r.message)), 'tokens are refused naming the missing key set')
  t.equal(down.state.requests, 1, 'without one more request to the issuer')
})

t.test('AUTH_PUBLIC_KEY: one PEM key, with real newlines or \\n escapes; bad settings stop the start naming them', async t => {
  const { privateKey, publicKey } = await generateKeyPair('RS256')
  const pem = await exportSPKI(publicKey)
  const key: TestKey = { kid: 'pem', alg: 'RS256', privateKey, jwk: {} }
  for (const text of [pem, pem.replace(/\n/g, '\\n')]) {
    const { url, wsUrl } = await build(t, { AUTH_PUBLIC_KEY: text, AUTH_ISSUER: ISSUER, AUTH_ALGORITHMS: 'RS256' })
    const client = await TestClient.connect(wsUrl, { token: await sign(key, { sub: 'pem-user' }) })
    t.equal(client.welcome.clientId, 'pem-user', 'an RS256 token verified with the PEM key opens /ws')
    await client.close()
    t.equal((await status(url, await sign(key))).status, 200, 'and the HTTP API')
    const other = await makeKey('pem', 'RS256')
    t.match(await refusal(url, await sign(other)), { status: 401, message: /signature verification failed/ }, 'another key\'s token is refused')
    const es = await makeKey('es', 'ES256')
    t.match(await refusal(url, await sign(es)), { status: 401, message: /token algorithm ES256 is not allowed \(AUTH_ALGORITHMS: RS256\)/ }, 'an algorithm outside AUTH_ALGORITHMS is named')
  }

  await t.rejects(build(t, { AUTH_PUBLIC_KEY: 'not a key' }), /AUTH_PUBLIC_KEY must be a PEM public key/)
  await t.rejects(build(t, { AUTH_ALGORITHMS: 'HS256' }), /AUTH_ALGORITHMS lists HS256, which needs AUTH_SECRET/)
  await t.rejects(build(t, { AUTH_PUBLIC_KEY: pem, AUTH_ALGORITHMS: 'RS256,none' }), /AUTH_ALGORITHMS must list some of HS256, RS256/)
  await t.rejects(build(t, { AUTH_PUBLIC_KEY: pem, AUTH_JWKS_URL: 'http://127.0.0.1:1/jwks' }), /set one of AUTH_JWKS_URL and AUTH_PUBLIC_KEY/)
  await t.rejects(build(t, { AUTH_SECRET: 'x'.repeat(32), AUTH_ALGORITHMS: 'ES256' }), /AUTH_ALGORITHMS lists ES256, which needs AUTH_JWKS_URL or AUTH_PUBLIC_KEY/)
})
