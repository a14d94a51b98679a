/**
 * What every HTTP request goes through, pinned from the outside: CORS headers
 * with and without an Origin, preflights, rate-limit headers, the duration
 * histogram's labels and the http.request log line. The hot path of
 * `POST /api/send` is tuned for speed (docs/benchmarks-notebook.md, S6); these say it
 * still behaves the same.
 */
import t from 'tap'
import { build } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'

const send = (url: string, headers: Record<string, string> = {}, body: unknown = { from: 'svc', to: 'nobody', text: 'hi' }) =>
  fetch(`${url}/api/send`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })

t.test('CORS on a simple request: Vary: Origin always; Allow-Origin only for a listed origin', async t => {
  const { url } = await build(t, { CORS_ORIGINS: 'http://ok.test' })

  const plain = await send(url)
  t.equal(plain.status, 200)
  t.equal(plain.headers.get('vary'), 'Origin')
  t.equal(plain.headers.get('access-control-allow-origin'), null)

  const listed = await send(url, { origin: 'http://ok.test' })
  t.equal(listed.status, 200)
  t.equal(listed.headers.get('vary'), 'Origin')
  t.equal(listed.headers.get('access-control-allow-origin'), 'http://ok.test')
  t.equal(listed.headers.get('access-control-allow-credentials'), null)
  t.equal(listed.headers.get('access-control-allow-methods'), null, 'preflight headers only on a preflight')

  const other = await send(url, { origin: 'http://evil.test' })
  t.equal(other.status, 200, 'CORS is for browsers to enforce: the request itself is served')
  t.equal(other.headers.get('vary'), 'Origin')
  t.equal(other.headers.get('access-control-allow-origin'), null)

  const status = await fetch(`${url}/api/status`, { headers: { origin: 'http://ok.test' } })
  t.equal(status.headers.get('access-control-allow-origin'), 'http://ok.test', 'every route, not only /api/send')
  const health = await fetch(`${url}/health`)
  t.equal(health.headers.get('vary'), 'Origin')
})

t.test('CORS preflights: 204 with the allowed methods and headers for a listed origin; refused otherwise', async t => {
  const { url } = await build(t, { CORS_ORIGINS: 'http://ok.test' })
  const preflight = (headers: Record<string, string>) => fetch(`${url}/api/send`, { method: 'OPTIONS', headers })

  const ok = await preflight({ origin: 'http://ok.test', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' })
  t.equal(ok.status, 204)
  t.equal(ok.headers.get('access-control-allow-origin'), 'http://ok.test')
  t.equal(ok.headers.get('access-control-allow-methods'), 'GET, POST, PATCH, OPTIONS')
  t.equal(ok.headers.get('access-control-allow-headers'), 'Content-Type, Authorization, Idempotency-Key')
  t.equal(ok.headers.get('access-control-max-age'), '600')
  t.equal(ok.headers.get('content-length'), '0')
  t.equal(ok.headers.get('vary'), 'Origin')
  t.equal(await ok.text(), '')

  const noMethod = await preflight({ origin: 'http://ok.test' })
  t.equal(noMethod.status, 400, 'a preflight needs Access-Control-Request-Method')
  t.equal(await noMethod.text(), 'Invalid Preflight Request')

  const other = await preflight({ origin: 'http://evil.test', 'access-control-request-method': 'POST' })
  t.equal(other.status, 404, 'no preflight for an origin that is not listed')
  t.equal(other.headers.get('access-control-allow-origin'), null)
  t.equal(other.headers.get('vary'), 'Origin')

  const noOrigin = await preflight({ 'access-control-request-method': 'POST' })
  t.equal(noOrigin.status, 404)
})

t.test('CORS_ORIGINS=*: Allow-Origin * for any origin, no Vary', async t => {
  const { url } = await build(t, { CORS_ORIGINS: '*' })
  const res = await send(url, { origin: 'http://anywhere.test' })
  t.equal(res.status, 200)
  t.equal(res.headers.get('access-control-allow-origin'), '*')
  t.equal(res.headers.get('vary'), null)
  const plain = await send(url)
  t.equal(plain.headers.get('access-control-allow-origin'), '*')
  const preflight = await fetch(`${url}/api/send`, { method: 'OPTIONS', headers: { origin: 'http://anywhere.test', 'access-control-request-method': 'POST' } })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers.get('access-control-allow-origin'), '*')
})

t.test('rate-limit headers on every limited response; a 429 carries Retry-After', async t => {
  const { url } = await build(t, { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const first = await send(url)
  t.equal(first.headers.get('x-ratelimit-limit'), '3')
  t.equal(first.headers.get('x-ratelimit-remaining'), '2')
  t.equal(first.headers.get('x-ratelimit-reset'), '60')
  t.equal((await send(url)).headers.get('x-ratelimit-remaining'), '1')
  const health = await fetch(`${url}/health`)
  t.equal(health.headers.get('x-ratelimit-limit'), null, 'only /api/ is limited')
  t.equal((await send(url)).headers.get('x-ratelimit-remaining'), '0')
  const refused = await send(url)
  t.equal(refused.status, 429)
  t.equal(refused.headers.get('retry-after'), '60')
  t.equal(refused.headers.get('x-ratelimit-remaining'), '0')
})

t.test('the duration histogram: method, route pattern and status; 404s as unmatched; no scrapes, no upgrades (not even refused ones)', async t => {
  const { url, wsUrl, app } = await build(t)
  const target = await TestClient.connect(wsUrl, { clientId: 'target' })
  t.teardown(() => target.close())
  t.equal((await send(url, {}, { from: 'svc', to: 'target', text: 'hi' })).status, 200)
  await target.next('message')
  t.equal((await send(url, {}, { from: 'svc', to: 'target', text: 'again' })).status, 200)
  t.equal((await send(url, {}, { from: 'svc', to: 'target' })).status, 400)
  t.equal((await fetch(`${url}/api/v1/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status, 400)
  t.equal((await fetch(`${url}/api/rooms/lobby`)).status, 404)
  t.equal((await fetch(`${url}/no/such/path?x=1`)).status, 404)
  await fetch(`${url}/metrics`)
  t.equal((await tryUpgrade(wsUrl, { headers: { origin: 'http://evil.test' } })).status, 403)

  const histogram = await app.metrics.httpDuration.get()
  const counts = histogram.values
    .filter(v => v.metricName === 'switchboard_http_request_duration_seconds_count')
    .map(v => `${v.labels.method} ${v.labels.route} ${v.labels.status_code} ${v.value}`)
    .sort()
  t.same(counts, [
    'GET /api/rooms/:room 404 1',
    'GET unmatched 404 1',
    'POST /api/send 200 2',
    'POST /api/send 400 1',
    'POST /api/v1/send 400 1'
  ])
  const sum = histogram.values.find(v => v.metricName === 'switchboard_http_request_duration_seconds_sum' && v.labels.route === '/api/send' && v.labels.status_code === '200')
  t.ok(sum !== undefined && sum.value > 0 && sum.value < 10, 'seconds, not milliseconds')
  const inf = histogram.values.find(v => v.metricName === 'switchboard_http_request_duration_seconds_bucket' && v.labels.route === '/api/send' && v.labels.status_code === '200' && (v.labels as Record<string, unknown>).le === '+Inf')
  t.equal(inf?.value, 2)
})

t.test('one http.request line per response with route, status and client key; quiet routes at debug', async t => {
  const { url, logs } = await build(t, { LOG_LEVEL: 'debug' })
  await send(url)
  await send(url, {}, { from: 'svc' })
  await fetch(`${url}/health`)
  await fetch(`${url}/nowhere`)
  await new Promise(resolve => setTimeout(resolve, 50))
  const lines = logs().filter(l => l.event === 'http.request')
  t.same(lines.map(l => [l.level, l.method, l.route, l.statusCode, l.clientKey]), [
    [30, 'POST', '/api/send', 200, '127.0.0.1'],
    [30, 'POST', '/api/send', 400, '127.0.0.1'],
    [20, 'GET', '/health', 200, '127.0.0.1'],
    [30, 'GET', 'unmatched', 404, '127.0.0.1']
  ])
  for (const l of lines) t.type(l.responseTime, 'number')
  t.ok(lines.every(l => typeof l.reqId === 'string'), 'each line carries its request id')
})

t.test('at LOG_LEVEL=warn no http.request line is written', async t => {
  const { url, logs } = await build(t, { LOG_LEVEL: 'warn' })
  await send(url)
  await fetch(`${url}/nowhere`)
  t.same(logs().filter(l => l.event === 'http.request'), [])
})

t.test('an upgrade to a path without a WebSocket endpoint is refused with 404 and a JSON body before any upgrade', async t => {
  const { port, wsUrl, logs } = await build(t, { LOG_LEVEL: 'debug' })
  for (const path of ['/health', '/ready', '/metrics', '/api/status', '/api/send', '/no/such/path', '/ws/extra', '/index.html', '/docs']) {
    const res = await tryUpgrade(`ws://127.0.0.1:${port}${path}`)
    t.equal(res.status, 404, `${path}: 404, not 101`)
    t.same(res.body, { statusCode: 404, error: 'Not Found', code: 'not_found', message: 'no WebSocket endpoint at this path; connect to /ws' }, `${path}: the API's error body`)
  }
  t.notOk(logs().some(l => /closed incoming websocket connection/.test(l.msg)), 'nothing was upgraded and closed')
  t.equal((await tryUpgrade(wsUrl)).status, 101, '/ws still upgrades')
})

t.test('GET /ws without an upgrade answers 426 with a JSON body saying how to connect', async t => {
  const { url } = await build(t)
  const res = await fetch(`${url}/ws?clientId=alice`)
  t.equal(res.status, 426)
  t.equal(res.headers.get('upgrade'), 'websocket')
  const body = await res.json() as any
  t.match(body, { statusCode: 426, error: 'Upgrade Required', code: 'upgrade_required', message: /WebSocket client.*Upgrade: websocket.*ws:\/\/HOST\/ws/ })
  t.equal((await fetch(`${url}/ws`, { method: 'HEAD' })).status, 426, 'HEAD too')
})
