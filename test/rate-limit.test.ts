import t from 'tap'
import { build } from './support/helper.js'
import { concretePath, isPublic, send, spellings, watchRoutes, type SeenRoute } from './support/route-spellings.js'

const post = (url: string, text: string) => fetch(`${url}/api/send`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ from: 'tester', to: 'target', text })
})

t.test('61 POSTs to /api/send in one window: exactly the 61st gets 429', async t => {
  const { url, logs } = await build(t)
  const statuses: number[] = []
  for (let i = 1; i <= 60; i++) statuses.push((await post(url, `n${i}`)).status)
  t.same(statuses, Array(60).fill(200), 'the first 60 succeed')
  const res = await post(url, 'n61')
  t.equal(res.status, 429)
  t.ok(Number(res.headers.get('retry-after')) > 0, 'retry-after is set')
  t.equal(res.headers.get('x-ratelimit-limit'), '60')
  t.equal(res.headers.get('x-ratelimit-remaining'), '0')
  t.ok(res.headers.get('x-ratelimit-reset'))
  const body = await res.json() as any
  t.match(body, { statusCode: 429, error: String, message: String })
  t.match(logs().find(l => l.event === 'rate_limit.exceeded'), { clientKey: '127.0.0.1' }, 'the 429 is logged with the client key')

  t.equal((await fetch(`${url}/api/v1/status`)).status, 429, '/api/v1 shares the budget')
  for (const path of ['/health', '/ready']) {
    t.equal((await fetch(`${url}${path}`)).status, 200, `${path} is not rate limited`)
  }
})

t.test('the limit counts per client key: another address has its own budget', async t => {
  const { url } = await build(t, { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  for (let i = 0; i < 3; i++) t.equal((await post(url, 'x')).status, 200)
  t.equal((await post(url, 'x')).status, 429)
  const other = await new Promise<number>((resolve, reject) => {
    import('node:http').then(({ request }) => {
      const req = request(`${url}/api/status`, { localAddress: '127.0.0.77' }, res => { res.resume(); resolve(res.statusCode ?? 0) })
      req.on('error', reject)
      req.end()
    }, reject)
  })
  t.equal(other, 200)
})

t.test('a spoofed X-Forwarded-For does not dodge the limit when TRUST_PROXY is off', async t => {
  const { url } = await build(t, { RATE_LIMIT_MAX: '2' })
  const statuses = []
  for (let i = 0; i < 4; i++) {
    statuses.push((await fetch(`${url}/api/status`, { headers: { 'x-forwarded-for': `10.0.0.${i}` } })).status)
  }
  t.same(statuses, [200, 200, 429, 429])
})

t.test('every spelling of every HTTP API route the router accepts counts against the limit and gets 429 past it', async t => {
  const seen: SeenRoute[] = []
  const { port, url } = await build(t, { RATE_LIMIT_MAX: '2' }, { before: watchRoutes(seen) })
  const limited = seen.filter(r => !isPublic(r) && !r.websocket)
  const names = limited.map(r => `${r.method} ${r.url}`)
  for (const expected of ['POST /api/send', 'POST /api/v1/send', 'GET /api/status', 'HEAD /api/v1/status', 'POST /api/rooms/:room/publish']) {
    t.ok(names.includes(expected), `${expected} is among the ${names.length} rate-limited routes`)
  }
  // each spelling gets a client address of its own, so a fresh budget of 2
  let next = 0
  const address = () => { const i = next++; return `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}` }
  const escapes: string[] = []
  let accepted = 0
  for (const route of limited) {
    for (const target of spellings(concretePath(route.url), url)) {
      const from = address()
      const first = await send(port, route.method, target, {}, from)
      if (first.route !== route.url) continue // the router did not take this spelling for this route
      accepted++
      const second = await send(port, route.method, target, {}, from)
      const third = await send(port, route.method, target, {}, from)
      if (first.status === 429 || second.status === 429 || third.status !== 429) escapes.push(`${route.method} ${target}: ${first.status} ${second.status} ${third.status}`)
    }
  }
  t.same(escapes, [], 'the 3rd request of every spelling is refused with 429, the first two are not')
  t.ok(accepted > limited.length * 5, `${accepted} accepted spellings of ${limited.length} routes checked`)

  // spellings share the canonical path's budget
  const from = address()
  t.not((await send(port, 'GET', '/api/status', {}, from)).status, 429)
  t.not((await send(port, 'GET', '/%61pi/status', {}, from)).status, 429)
  t.equal((await send(port, 'GET', '/api/v1/st%61tus', {}, from)).status, 429, 'the 3rd request, whatever its spelling, is over the limit')
  t.equal((await send(port, 'GET', '/health', {}, from)).status, 200, '/health is not limited')
})

t.test('one budget for the whole HTTP API: with RATE_LIMIT_MAX=3 the 4th request of a client key is 429, whether it hits /api/v1/status or /api/v1/docs/:doc (issue 26, row 15)', async t => {
  const { url } = await build(t, { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const statusOf = async (path: string, localAddress: string) => {
    const { request } = await import('node:http')
    return await new Promise<number>((resolve, reject) => {
      const req = request(`${url}${path}`, { localAddress }, res => { res.resume(); resolve(res.statusCode ?? 0) })
      req.on('error', reject)
      req.end()
    })
  }
  const first = []
  for (let i = 0; i < 3; i++) first.push(await statusOf('/api/v1/status', '127.0.0.81'))
  t.same(first, [200, 200, 200], 'three requests to /api/v1/status')
  t.equal(await statusOf('/api/v1/docs/x', '127.0.0.81'), 429, 'the 4th, to /api/v1/docs/x, is 429')

  const second = []
  for (let i = 0; i < 3; i++) second.push(await statusOf('/api/v1/docs/x', '127.0.0.82'))
  t.same(second, [200, 200, 200], 'another client key: three requests to /api/v1/docs/x')
  t.equal(await statusOf('/api/v1/status', '127.0.0.82'), 429, 'the 4th, to /api/v1/status, is 429')
})
