import t from 'tap'
import { build } from './support/helper.js'
import { readAnswer, tryUpgrade } from './support/ws-client.js'
import http from 'node:http'
import { upgrade } from './support/route-spellings.js'
import { loadConfig } from '../plugins/core/config.js'

t.test('an upgrade from an origin that is not listed is refused with 403 before the upgrade', async t => {
  const { wsUrl } = await build(t, { CORS_ORIGINS: 'http://localhost:3000,http://localhost:5000' })
  for (const origin of ['http://evil.com', 'http://localhost:3000.evil.com', 'null', 'https://localhost:3000', 'http://localhost:30000']) {
    const res = await tryUpgrade(wsUrl, { headers: { origin } })
    t.equal(res.status, 403, origin)
    t.match(res.body, { statusCode: 403, error: 'Forbidden', message: String }, `${origin}: Fastify error body`)
  }
})

t.test('a listed origin, the server\'s own origin and a client without Origin are upgraded', async t => {
  const { wsUrl, url } = await build(t, { CORS_ORIGINS: 'http://localhost:3000' })
  t.equal((await tryUpgrade(wsUrl, { headers: { origin: 'http://localhost:3000' } })).status, 101, 'listed origin')
  t.equal((await tryUpgrade(wsUrl, { headers: { origin: url } })).status, 101, 'own origin')
  t.equal((await tryUpgrade(wsUrl)).status, 101, 'no Origin header (a non-browser client)')
})

t.test('by default the examples\' pages may connect, under either loopback name', async t => {
  const { wsUrl, url } = await build(t)
  for (const origin of ['http://localhost:3000', 'http://localhost:5000', 'http://127.0.0.1:3000', 'http://127.0.0.1:5000']) {
    t.equal((await tryUpgrade(wsUrl, { headers: { origin } })).status, 101, `${origin}: upgraded`)
    const preflight = await fetch(`${url}/api/send`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } })
    t.equal(preflight.headers.get('access-control-allow-origin'), origin, `${origin}: CORS allowed`)
  }
  t.equal((await tryUpgrade(wsUrl, { headers: { origin: 'http://127.0.0.1:8080' } })).status, 403, 'another port is not')
})

/** One request with a Host and Origin of the test's choosing (fetch does not let a page, or a test, set Host). */
function rawRequest (port: number, method: string, path: string, headers: Record<string, string>): Promise<{ status: number, body: any, headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, res => { readAnswer(res).then(resolve, reject) })
    req.on('error', reject)
    req.end(method === 'POST' ? JSON.stringify({ from: 'page', to: 'alice', text: 'rebound' }) : undefined)
  })
}

t.test('DNS rebinding: a page whose name now points at this server is refused 403, on the upgrade and over HTTP', async t => {
  const { port, url, logs } = await build(t, { CORS_ORIGINS: 'http://localhost:3000' })
  const evil = { host: `evil.example:${port}`, origin: `http://evil.example:${port}` }
  const up = await upgrade(port, '/ws', evil)
  t.equal(up.status, 403, 'the upgrade, whose Origin matches the Host it names')
  const post = await rawRequest(port, 'POST', '/api/send', { ...evil, 'content-type': 'application/json' })
  t.equal(post.status, 403, 'a same-origin POST from the rebound page')
  t.match(post.body, { statusCode: 403, error: 'Forbidden', message: /origin not allowed/ })
  t.equal(post.headers['access-control-allow-origin'], undefined)
  const get = await rawRequest(port, 'GET', '/api/status', evil)
  t.equal(get.status, 403, 'a same-origin GET that carries Origin')
  const preflight = await rawRequest(port, 'OPTIONS', '/api/send', { ...evil, 'access-control-request-method': 'POST' })
  t.equal(preflight.status, 403, 'a preflight from it')
  t.match(logs().find(l => l.event === 'origin.rejected'), { origin: evil.origin, clientKey: '127.0.0.1' })

  t.equal((await upgrade(port, '/ws', { host: `127.0.0.1:${port}`, origin: url })).status, 101, 'the listen address is still the own origin')
  t.equal((await rawRequest(port, 'POST', '/api/send', { host: `127.0.0.1:${port}`, origin: url, 'content-type': 'application/json' })).status, 200)
  const crossSite = await rawRequest(port, 'POST', '/api/send', { host: `127.0.0.1:${port}`, origin: 'http://evil.example', 'content-type': 'application/json' })
  t.equal(crossSite.status, 200, 'a cross-site request is still served: the browser enforces CORS on it')
  t.equal(crossSite.headers['access-control-allow-origin'], undefined)
})

t.test('PUBLIC_URL is the own origin, whatever Host says; without it the listen address is', async t => {
  const { port } = await build(t, { PUBLIC_URL: 'https://chat.example.com/app/', CORS_ORIGINS: 'http://localhost:3000' })
  const own = { host: 'chat.example.com', origin: 'https://chat.example.com' }
  t.equal((await upgrade(port, '/ws', own)).status, 101, 'the configured origin upgrades')
  t.equal((await rawRequest(port, 'POST', '/api/send', { ...own, 'content-type': 'application/json' })).status, 200, 'and calls the API')
  t.equal((await upgrade(port, '/ws', { host: 'chat.example.com', origin: 'http://chat.example.com' })).status, 403, 'another scheme is another origin')
  t.equal((await upgrade(port, '/ws', { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}` })).status, 403, 'the listen address is not an origin once PUBLIC_URL is set')
  t.equal((await upgrade(port, '/ws', { host: `evil.example:${port}`, origin: `http://evil.example:${port}` })).status, 403)
  t.equal((await upgrade(port, '/ws', { origin: 'http://localhost:3000' })).status, 101, 'CORS_ORIGINS still apply')
})

t.test('PUBLIC_URL must be an http(s) URL', async t => {
  t.throws(() => loadConfig({ PUBLIC_URL: 'chat.example.com' }), /PUBLIC_URL must be an http:\/\/ or https:\/\/ URL \(got "chat.example.com"\)/)
  t.throws(() => loadConfig({ PUBLIC_URL: 'http://' }), /PUBLIC_URL/)
  t.equal(loadConfig({ PUBLIC_URL: 'https://a.example:8443' }).PUBLIC_URL, 'https://a.example:8443')
})
