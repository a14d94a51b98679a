import t from 'tap'
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { Webhook } from 'standardwebhooks'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { build, requestJson, type TestContext } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'
import { StreamReader } from './support/stream-clients.js'
import { SwitchboardClient, SwitchboardError } from '../client/index.js'

const SECRET = `whsec_${randomBytes(32).toString('base64')}`

/** One request as the backend got it: the parsed body, its headers, and whether its signature verified. */
interface Call { path: string, body: Record<string, any>, raw: string, headers: http.IncomingHttpHeaders, verified: boolean }

/** What the backend does with a request: a JSON answer, raw bytes, or nothing at all (it holds the request open). */
type Answer = { json: unknown, status?: number } | { raw: string | Buffer, status?: number } | 'hold'

/**
 * A real application backend (node:http): each request is verified with the
 * `standardwebhooks` library (as a backend would), recorded, and answered by
 * `answer` for its path (/connect, /join, /publish, /rpc).
 */
async function backend (t: TestContext, answer: (call: Call) => Answer) {
  const calls: Call[] = []
  const verifier = new Webhook(SECRET)
  const held: http.ServerResponse[] = []
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString()
      let verified = true
      try {
        verifier.verify(text, req.headers as Record<string, string>)
      } catch {
        verified = false
      }
      const call = { path: req.url ?? '', body: JSON.parse(text), raw: text, headers: req.headers, verified }
      calls.push(call)
      const a = answer(call)
      if (a === 'hold') {
        held.push(res)
        return
      }
      if ('json' in a) res.writeHead(a.status ?? 200, { 'content-type': 'application/json' }).end(JSON.stringify(a.json))
      else res.writeHead(a.status ?? 200, { 'content-type': 'application/json' }).end(a.raw)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => {
    for (const res of held) res.destroy()
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { calls, base, of: (hook: string) => calls.filter(c => c.body.hook === hook) }
}

/** A URL where nothing listens: a port that was just given back. */
async function closedPort (): Promise<string> {
  const server = http.createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>(resolve => server.close(() => resolve()))
  return `http://127.0.0.1:${port}`
}

const hooksAt = (base: string, hooks = ['connect', 'join', 'publish', 'rpc']) =>
  Object.fromEntries(hooks.map(h => [`PROXY_${h.toUpperCase()}_URL`, `${base}/${h}`]))

t.test('join and publish hooks: allow with data, deny naming the hook, rewrite what is stored and broadcast; every request signed and traced', async t => {
  const be = await backend(t, ({ body }) => {
    if (body.hook === 'join') return body.room === 'secret' ? { json: { allow: false, code: 'not_a_member', message: 'members only' } } : { json: { allow: true, data: { role: 'editor' } } }
    if (body.hook === 'publish') {
      if (body.data?.text === 'spam') return { json: { allow: false, code: 'spam' } }
      return { json: { allow: true, data: { ...body.data, text: String(body.data.text).toUpperCase(), checked: true } } }
    }
    return { json: { allow: true } }
  })
  const { wsUrl, url, logs } = await build(t, { ...hooksAt(be.base, ['join', 'publish']), PROXY_SECRET: SECRET })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })

  const joined = await alice.request({ type: 'join', room: 'lobby' })
  t.equal(joined.type, 'joined')
  t.same(joined.data, { role: 'editor' }, 'the join hook\'s data is in joined')
  await bob.request({ type: 'join', room: 'lobby' })

  const refused = await alice.request({ type: 'join', room: 'secret' })
  t.match(refused, { type: 'error', code: 'forbidden', hook: 'join', reason: 'not_a_member' })
  t.match(refused.message, /join hook \(PROXY_JOIN_URL\): members only/, 'the error names the hook and carries the backend\'s message')

  const ack = await alice.request({ type: 'publish', room: 'lobby', data: { text: 'hello' }, idempotencyKey: 'k-1' })
  t.equal(ack.type, 'ack')
  const seen = await bob.next('room_message')
  t.same(seen.data, { text: 'HELLO', checked: true }, 'members get the rewrite')
  const history = await requestJson(`${url}/api/rooms/lobby/history`)
  t.same(history.body.messages.map((m: any) => m.data), [{ text: 'HELLO', checked: true }], 'the rewrite is what is stored')

  const spam = await alice.request({ type: 'publish', room: 'lobby', data: { text: 'spam' } })
  t.match(spam, { type: 'error', code: 'forbidden', hook: 'publish', reason: 'spam' })
  t.equal((await requestJson(`${url}/api/rooms/lobby`)).body.offset, 1, 'a refused publish is not stored')

  // the repeat of an idempotent publish gets the first ack without asking the backend again
  const repeat = await alice.request({ type: 'publish', room: 'lobby', data: { text: 'hello' }, idempotencyKey: 'k-1' })
  t.match(repeat, { type: 'ack', offset: 1, duplicate: true })
  t.equal(be.of('publish').filter(c => c.body.idempotencyKey === 'k-1').length, 1, 'asked once for one idempotency key')

  const join = be.of('join')[0]
  t.match(join.body, { hook: 'join', clientId: 'alice', connectionId: alice.welcome.connectionId, protocol: 'switchboard', room: 'lobby', timestamp: String })
  const publish = be.of('publish')[0]
  t.match(publish.body, { hook: 'publish', clientId: 'alice', connectionId: alice.welcome.connectionId, protocol: 'switchboard', room: 'lobby', data: { text: 'hello' }, idempotencyKey: 'k-1' })
  t.ok(be.calls.every(c => c.verified), 'every request verifies with the standardwebhooks library and the shared secret')
  const other = new Webhook(`whsec_${randomBytes(32).toString('base64')}`)
  t.throws(() => other.verify(join.raw, join.headers as Record<string, string>), 'another secret does not verify it')
  t.throws(() => new Webhook(SECRET).verify(join.raw.replace('lobby', 'lobbx'), join.headers as Record<string, string>), 'a changed body does not verify')
  t.ok(be.calls.every(c => /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/.test(String(c.headers.traceparent))), 'every request carries a W3C traceparent')
  t.ok(logs().some(l => l.event === 'proxy.denied' && l.hook === 'join' && l.code === 'not_a_member'), 'a refusal is logged as proxy.denied')
  t.notOk(JSON.stringify(logs()).includes(SECRET.slice(6)), 'the secret is never logged')
  const catalogue = readFileSync(new URL('../../docs/operations.md', import.meta.url), 'utf8')
  for (const event of new Set(logs().map(l => String(l.event)).filter(e => e.startsWith('proxy.')))) t.ok(catalogue.includes(`| \`${event}\` |`), `${event} is in the log event catalogue`)
})

t.test('with tracing on, each hook call is a client span inside the message\'s trace, and its context is the traceparent the backend gets', async t => {
  const exporter = new InMemorySpanExporter()
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  const be = await backend(t, () => ({ json: { allow: true } }))
  const { wsUrl } = await build(t, { ...hooksAt(be.base, ['join']), PROXY_SECRET: SECRET }, { app: { tracing: { tracerProvider } } })
  const client = await TestClient.connect(wsUrl, { clientId: 'tracy' })
  await client.request({ type: 'join', room: 'traced' })
  const span = exporter.getFinishedSpans().find(s => s.name === 'proxy join')
  t.ok(span, 'a proxy join span')
  const message = exporter.getFinishedSpans().find(s => s.name === 'ws join')
  t.equal(span?.spanContext().traceId, message?.spanContext().traceId, 'in the trace of the join message')
  t.equal(be.of('join')[0].headers.traceparent, `00-${span?.spanContext().traceId}-${span?.spanContext().spanId}-01`, 'the backend gets the span\'s context')
  t.equal(span?.attributes['switchboard.proxy.outcome'], 'allowed')
})

t.test('the HTTP API publish asks the publish hook: a rewrite is stored, a refusal answers 403', async t => {
  const be = await backend(t, ({ body }) => body.data === 'no' ? { json: { allow: false, code: 'nope', message: 'not this' } } : { json: { allow: true, data: { wrapped: body.data } } })
  const { url } = await build(t, { ...hooksAt(be.base, ['publish']), PROXY_SECRET: SECRET })
  const ok = await fetch(`${url}/api/rooms/news/publish`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': 'h-1' }, body: JSON.stringify({ from: 'ci', data: 42 }) })
  t.equal(ok.status, 200)
  const history = await requestJson(`${url}/api/rooms/news/history`)
  t.same(history.body.messages[0].data, { wrapped: 42 })
  t.match(be.of('publish')[0].body, { hook: 'publish', clientId: 'ci', connectionId: null, protocol: 'http', room: 'news', data: 42, idempotencyKey: 'h-1' })
  const refused = await requestJson(`${url}/api/rooms/news/publish`, 'POST', { data: 'no' })
  t.equal(refused.status, 403)
  t.match(refused.body, { code: 'forbidden', message: /publish hook \(PROXY_PUBLISH_URL\): not this/ })
})

t.test('the connect hook refuses an upgrade with 403 and the backend\'s code; when it allows it names the client, its rooms and welcome data', async t => {
  const be = await backend(t, ({ body }) => {
    if (body.hook !== 'connect') return { json: { allow: true } }
    if (body.headers.cookie !== 'session=good') return { json: { allow: false, code: 'no_session', message: 'log in first' } }
    return { json: { allow: true, clientId: 'user-42', rooms: ['inbox.user-42', 'lobby'], data: { plan: 'pro' } } }
  })
  const { wsUrl, url, app } = await build(t, { ...hooksAt(be.base, ['connect', 'join']), PROXY_SECRET: SECRET })

  const refused = await tryUpgrade(wsUrl, { headers: { cookie: 'session=bad' } })
  t.equal(refused.status, 403)
  t.match(refused.body, { error: 'Forbidden', code: 'forbidden', hook: 'connect', reason: 'no_session', message: /log in first/ })

  const client = await TestClient.connect(wsUrl, { clientId: 'whoever', headers: { cookie: 'session=good' } })
  t.equal(client.welcome.clientId, 'user-42', 'the backend named the client')
  t.same(client.welcome.data, { plan: 'pro' }, 'the connect hook\'s data is in welcome')
  const rooms = [await client.next('joined'), await client.next('joined')].map(j => j.room).sort()
  t.same(rooms, ['inbox.user-42', 'lobby'], 'joined to the rooms the backend named')
  t.equal(be.of('join').length, 0, 'rooms the connect hook named are not asked of the join hook again')
  const connect = be.of('connect')[1]
  t.match(connect.body, { hook: 'connect', clientId: 'whoever', connectionId: client.welcome.connectionId, protocol: 'switchboard', headers: { cookie: 'session=good' } })
  t.ok(connect.verified)
  const members = await requestJson(`${url}/api/rooms/lobby`)
  t.same(members.body.members, ['user-42'])
  const metrics = await app.metrics.connectionRejections.get()
  t.ok(metrics.values.some(v => v.labels.reason === 'proxy' && v.value === 1), `the refusal is counted as reason proxy: ${JSON.stringify(metrics.values)}`)
})

t.test('the connect hook is asked at every door: a y-websocket upgrade names its protocol and can be refused', async t => {
  const be = await backend(t, ({ body }) => body.protocol === 'switchboard' ? { json: { allow: true } } : { json: { allow: false, code: 'native_only' } })
  const { wsUrl } = await build(t, { ...hooksAt(be.base, ['connect']), PROXY_SECRET: SECRET })
  const refused = await tryUpgrade(wsUrl.replace(/\/ws$/, '/yjs/notes'))
  t.equal(refused.status, 403)
  t.match(refused.body, { code: 'forbidden', hook: 'connect', reason: 'native_only' })
  t.match(be.of('connect')[0].body, { hook: 'connect', protocol: 'y-websocket' })
  const native = await TestClient.connect(wsUrl)
  t.match(native.welcome.clientId, /^anon-/, 'the native door is allowed; its generated client id is the one the backend was told')
  t.equal(be.of('connect')[1].body.clientId, native.welcome.clientId)
})

t.test('a stream (GET /stream) passes the connect hook at its open and the join hook for each listed room', async t => {
  const be = await backend(t, ({ body }) => {
    if (body.hook === 'connect') return body.headers.cookie === 'session=good' ? { json: { allow: true, clientId: 'user-7', data: { plan: 'free' } } } : { json: { allow: false, code: 'no_session', message: 'log in first' } }
    if (body.hook === 'join') return body.room === 'secret' ? { json: { allow: false, code: 'not_a_member', message: 'members only' } } : { json: { allow: true } }
    return { json: { allow: true } }
  })
  const { url } = await build(t, { ...hooksAt(be.base, ['connect', 'join']), PROXY_SECRET: SECRET })

  const refused = new StreamReader(`${url}/stream?rooms=lobby`, { headers: { cookie: 'session=bad' } })
  t.teardown(() => refused.close())
  t.match(await refused.refusal(), { code: 'forbidden', hook: 'connect', reason: 'no_session', message: /log in first/ })
  t.equal(refused.status, 403, 'a refused stream never starts')

  const stream = new StreamReader(`${url}/stream?rooms=lobby,secret`, { headers: { cookie: 'session=good' } })
  t.teardown(() => stream.close())
  const welcome = await stream.log.next('welcome')
  t.equal(welcome.data.clientId, 'user-7', 'the backend named the stream\'s client')
  t.same(welcome.data.data, { plan: 'free' }, 'the connect hook\'s data is in welcome')
  t.match((await stream.log.next('joined')).data, { room: 'lobby' }, 'an allowed room is joined')
  t.match((await stream.log.next('error')).data, { room: 'secret', code: 'forbidden', message: /join hook \(PROXY_JOIN_URL\): members only/ }, 'a refused room is told on the stream, which goes on')
  t.match(be.of('connect')[1].body, { hook: 'connect', protocol: 'stream', connectionId: welcome.data.connectionId })
  t.same(be.of('join').map(c => c.body.room).sort(), ['lobby', 'secret'])
})

t.test('at the Pusher door the connect hook may refuse or allow, and cannot rename the socket: its id stays a Pusher socket id', async t => {
  const be = await backend(t, ({ body }) => body.headers.cookie === 'no' ? { json: { allow: false, code: 'banned' } } : { json: { allow: true, clientId: 'user-42' } })
  const { wsUrl, logs } = await build(t, { ...hooksAt(be.base, ['connect']), PROXY_SECRET: SECRET, PUSHER_APP_ID: 'app', PUSHER_APP_KEY: 'key', PUSHER_APP_SECRET: 'secret' })
  const pusherUrl = wsUrl.replace(/\/ws$/, '/app/key')
  const refused = await tryUpgrade(pusherUrl, { headers: { cookie: 'no' }, query: { protocol: '7' } })
  t.equal(refused.status, 403)
  t.match(refused.body, { code: 'forbidden', hook: 'connect', reason: 'banned' })
  const client = await TestClient.connect(`${pusherUrl}?protocol=7`, { waitWelcome: false })
  const established = await client.waitFor(m => m.event === 'pusher:connection_established', 'connection_established')
  const socketId = JSON.parse(established.data).socket_id
  t.match(socketId, /^\d+\.\d+$/, 'a Pusher socket id')
  const asked = be.of('connect').find(c => c.body.protocol === 'pusher' && c.body.headers.cookie !== 'no')
  t.equal(asked?.body.clientId, `pusher-${socketId}`, 'the backend was told the socket\'s client id')
  t.ok(logs().some(l => l.event === 'proxy.client_id_ignored' && l.protocol === 'pusher'), 'the rename is ignored and logged')
})

t.test('a slow backend times out: deny refuses with unavailable, allow goes on; the connection and server survive', async t => {
  const be = await backend(t, () => 'hold')
  const denying = await build(t, { ...hooksAt(be.base, ['join', 'publish', 'connect']), PROXY_SECRET: SECRET, PROXY_TIMEOUT_MS: '150', PROXY_CONNECT_ON_FAILURE: 'allow' })
  const client = await TestClient.connect(denying.wsUrl, { clientId: 'carol' })
  t.notOk('data' in client.welcome, 'connect failed under allow: the connection goes on, without data')
  const refused = await client.request({ type: 'join', room: 'r' })
  t.match(refused, { type: 'error', code: 'unavailable', hook: 'join', reason: 'timeout' })
  t.match(refused.message, /PROXY_TIMEOUT_MS/)
  t.match(await client.request({ type: 'ping' }), { type: 'pong' }, 'the connection survives')
  t.ok(denying.logs().some(l => l.event === 'proxy.failed' && l.hook === 'join' && l.outcome === 'timeout' && l.policy === 'deny'))

  const allowing = await build(t, { ...hooksAt(be.base, ['join']), PROXY_SECRET: SECRET, PROXY_TIMEOUT_MS: '150', PROXY_JOIN_ON_FAILURE: 'allow' })
  const dave = await TestClient.connect(allowing.wsUrl, { clientId: 'dave' })
  t.match(await dave.request({ type: 'join', room: 'r' }), { type: 'joined', room: 'r' }, 'allow: the join goes on')
  t.ok(allowing.logs().some(l => l.event === 'proxy.failed' && l.hook === 'join' && l.policy === 'allow'))
})

t.test('a backend that is down: connect answers 503 under deny, join and rpc are unavailable; status counts the failures', async t => {
  const down = await closedPort()
  const { wsUrl, url } = await build(t, { ...hooksAt(down, ['join', 'rpc']), PROXY_SECRET: SECRET })
  const client = await TestClient.connect(wsUrl, { clientId: 'erin' })
  t.match(await client.request({ type: 'join', room: 'r' }), { type: 'error', code: 'unavailable', hook: 'join', reason: 'unreachable' })
  t.match(await client.request({ type: 'rpc', method: 'ping' }), { type: 'error', code: 'unavailable', hook: 'rpc', reason: 'unreachable' })
  const status = await requestJson(`${url}/api/status`)
  t.match(status.body.proxy, { enabled: true, timeoutMs: 3000, hooks: { join: { url: `${down}/join`, onFailure: 'deny', calls: 1, failures: 1 }, rpc: { onFailure: 'error', failures: 1 } } })
  t.notOk(JSON.stringify(status.body).includes(SECRET.slice(6)), 'no secret in the status')

  const connectDown = await build(t, { ...hooksAt(down, ['connect']), PROXY_SECRET: SECRET })
  const refused = await tryUpgrade(connectDown.wsUrl)
  t.equal(refused.status, 503)
  t.match(refused.body, { code: 'unavailable', hook: 'connect', reason: 'unreachable' })
})

t.test('a malicious backend (huge, malformed, wrongly typed, deep answers) counts as a failure; nothing crashes', async t => {
  const answers: Record<string, Answer> = {
    huge: { raw: JSON.stringify({ allow: true, data: 'x'.repeat(2 * 1024 * 1024) }) },
    malformed: { raw: '{"allow": tru' },
    wrong: { json: { allow: 'yes', data: 1 } },
    proto: { raw: '{"allow": true, "__proto__": {"polluted": true}}' },
    deep: { raw: `{"allow":true,"data":${'['.repeat(200)}${']'.repeat(200)}}` },
    status: { json: { allow: true }, status: 500 },
    array: { json: [1, 2] }
  }
  const be = await backend(t, ({ body }) => answers[body.method] ?? { json: { allow: true, data: 'fine' } })
  const { wsUrl, app } = await build(t, { ...hooksAt(be.base, ['rpc']), PROXY_SECRET: SECRET })
  const client = await TestClient.connect(wsUrl, { clientId: 'mallory' })
  for (const method of Object.keys(answers)) {
    const reply = await client.request({ type: 'rpc', method })
    t.match(reply, { type: 'error', code: 'unavailable', hook: 'rpc' }, `${method}: refused as a failure`)
    t.equal(reply.reason, method === 'status' ? 'http_error' : 'invalid', `${method}: ${reply.message}`)
  }
  t.equal(({} as any).polluted, undefined, 'no prototype pollution')
  t.match(await client.request({ type: 'rpc', method: 'ok' }), { type: 'rpc_result', data: 'fine' }, 'the connection survives and the next call works')
  const histogram = await app.metrics.proxyDuration.get()
  t.ok(histogram.values.some(v => v.labels.hook === 'rpc' && v.labels.outcome === 'invalid' && v.metricName?.endsWith('_count') && v.value === 6), 'the latency histogram counts by hook and outcome')
})

t.test('rpc: a round trip, a refusal with the backend\'s code, bounds on method and data, and no backend', async t => {
  const be = await backend(t, ({ body }) => body.method === 'admin.only'
    ? { json: { allow: false, code: 'not_admin', message: 'admins only' } }
    : { json: { allow: true, data: { echo: body.data, method: body.method } } })
  const { wsUrl } = await build(t, { ...hooksAt(be.base, ['rpc']), PROXY_SECRET: SECRET })
  const client = await TestClient.connect(wsUrl, { clientId: 'frank' })
  const result = await client.request({ type: 'rpc', method: 'users.get', data: { id: 7 } })
  t.same(result, { type: 'rpc_result', data: { echo: { id: 7 }, method: 'users.get' }, id: result.id })
  t.match(be.of('rpc')[0].body, { hook: 'rpc', method: 'users.get', data: { id: 7 }, clientId: 'frank', connectionId: client.welcome.connectionId, protocol: 'switchboard' })
  t.match(await client.request({ type: 'rpc', method: 'admin.only' }), { type: 'error', code: 'forbidden', hook: 'rpc', reason: 'not_admin', message: /admins only/ })
  t.match(await client.request({ type: 'rpc', method: 'x'.repeat(129) }), { type: 'error', code: 'invalid_message', message: /method: must be at most 128 characters/ })
  t.match(await client.request({ type: 'rpc', method: 'bad method!' }), { type: 'error', code: 'invalid_message', message: /method/ })
  t.match(await client.request({ type: 'rpc' }), { type: 'error', code: 'invalid_message', message: /method/ })
  t.equal(be.of('rpc').length, 2, 'invalid frames never reach the backend')

  // the TypeScript client: rpc() resolves with the backend's data, a refusal rejects with its code
  const sdk = new SwitchboardClient({ url: wsUrl.replace(/^ws/, 'http'), clientId: 'sdk' })
  t.teardown(() => sdk.close())
  await sdk.connect()
  t.same(await sdk.rpc('users.get', { id: 8 }), { echo: { id: 8 }, method: 'users.get' })
  const err = await sdk.rpc('admin.only').catch((e: unknown) => e) as SwitchboardError
  t.ok(err instanceof SwitchboardError)
  t.match(err, { code: 'forbidden', details: { hook: 'rpc', reason: 'not_admin' } })

  const plain = await build(t)
  const other = await TestClient.connect(plain.wsUrl)
  t.match(await other.request({ type: 'rpc', method: 'users.get' }), { type: 'error', code: 'unavailable', reason: 'not_configured', message: /PROXY_RPC_URL/ })
})

t.test('a hook URL needs a secret; a bad policy is refused with one line', async t => {
  const { loadConfig } = await import('../plugins/core/config.js')
  t.throws(() => loadConfig({ PROXY_JOIN_URL: 'http://127.0.0.1:1/join' }), /PROXY_JOIN_URL needs PROXY_SECRET/)
  t.throws(() => loadConfig({ PROXY_JOIN_URL: 'http://127.0.0.1:1/join', PROXY_SECRET: 'short' }), /PROXY_SECRET must/)
  t.throws(() => loadConfig({ PROXY_JOIN_ON_FAILURE: 'maybe' }), /PROXY_JOIN_ON_FAILURE must be one of deny, allow/)
  t.ok(loadConfig({ PROXY_RPC_URL: 'http://127.0.0.1:1/rpc', WEBHOOK_SECRET: SECRET }), 'WEBHOOK_SECRET signs when PROXY_SECRET is unset')
})
