import t from 'tap'
import { readFileSync } from 'node:fs'
import { createSigner } from 'fast-jwt'
import { build, waitFor } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'
import { connect } from 'node:net'
import { concretePath, send, upgrade, watchRoutes, type SeenRoute } from './support/route-spellings.js'

const SECRET = 'log-test-secret-that-is-long-enough-0123456789'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)

/** The event names of the catalogue table in docs/operations.md, as an operator reads them. */
function catalogue (): Map<string, string> {
  const doc = readFileSync(new URL('../../docs/operations.md', import.meta.url), 'utf8')
  const section = doc.split(/^#### Log event catalogue$/m)[1]?.split(/^#{2,4} /m)[0] ?? ''
  const events = new Map<string, string>()
  for (const row of section.split('\n')) {
    const cells = row.split('|').map(c => c.trim())
    const name = /^`([a-z_.]+)`$/.exec(cells[1] ?? '')?.[1]
    if (name) events.set(name, cells[2])
  }
  return events
}

t.test('docs/operations.md has a catalogue of log events', async t => {
  const events = catalogue()
  t.ok(events.size >= 30, `${events.size} events listed`)
  for (const name of ['connection.open', 'connection.close', 'http.request', 'shutdown.step', 'rate_limit.exceeded', 'store.batch_failed']) {
    t.ok(events.has(name), name)
  }
})

t.test('a session of traffic and a shutdown: every line is JSON with a catalogued event; no message text or token', async t => {
  const events = catalogue()
  const built = await build(t, { AUTH_SECRET: SECRET, RATE_LIMIT_MAX: '3', WS_MESSAGES_PER_SECOND: '20', LOG_LEVEL: 'debug' })
  const { url, wsUrl, app } = built
  const aliceToken = sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600 })
  const serviceToken = sign({ sub: 'backend', role: 'service' })
  const DM_TEXT = 'dm-text-that-must-not-be-logged'
  const ROOM_DATA = 'room-data-that-must-not-be-logged'

  const alice = await TestClient.connect(wsUrl, { token: aliceToken })
  await alice.request({ type: 'ping' })
  t.equal((await alice.request({ type: 'join', room: 'lobby' })).type, 'joined')
  await alice.request({ type: 'publish', room: 'lobby', data: { text: ROOM_DATA } })
  await alice.request({ type: 'send', to: 'bob', text: DM_TEXT })
  alice.send('{ not json')
  t.equal((await alice.next('error')).code, 'invalid_message')
  // over 20 messages per second (burst 40): the last ones are refused
  for (let i = 0; i < 50; i++) alice.send({ type: 'ping' })
  await alice.waitFor(m => m.type === 'error' && m.code === 'rate_limited', 'a rate_limited error')

  const send = await fetch(`${url}/api/send`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken}` },
    body: JSON.stringify({ from: 'backend', to: 'alice', text: DM_TEXT })
  })
  t.equal(send.status, 200)
  await alice.next('message')
  const statuses = []
  for (let i = 0; i < 4; i++) statuses.push((await fetch(`${url}/api/status?token=${serviceToken}`)).status)
  t.equal(statuses.at(-1), 429, 'the HTTP rate limit refused a request')
  t.equal((await tryUpgrade(wsUrl, { query: { token: 'not-a-token' } })).status, 401)

  await app.close()
  await waitFor(() => built.logs().some(l => l.event === 'shutdown.step' && l.step === 'done'), 'the end of the shutdown')

  const raw = built.rawLogs()
  const lines = raw.split('\n').filter(Boolean)
  const parsed: Array<Record<string, any>> = []
  for (const line of lines) {
    try {
      parsed.push(JSON.parse(line))
    } catch {
      t.fail(`not JSON: ${line.slice(0, 200)}`)
    }
  }
  t.equal(parsed.length, lines.length, `all ${lines.length} lines are JSON`)

  const uncatalogued = parsed.filter(l => l.level >= 30 && !events.has(l.event))
  t.same(uncatalogued.map(l => `${l.event ?? '(no event)'}: ${l.msg}`), [], 'every line at info or above has an event the catalogue lists')
  const debugWithout = parsed.filter(l => l.level < 30 && !events.has(l.event))
  t.same(debugWithout.map(l => `${l.event ?? '(no event)'}: ${l.msg}`), [], 'so does every debug line')

  const seen = new Set(parsed.map(l => l.event))
  for (const event of ['server.address', 'store.opened', 'connection.open', 'connection.close', 'http.request', 'rate_limit.exceeded', 'auth.rejected', 'shutdown.step']) {
    t.ok(seen.has(event), `the session wrote ${event}`)
  }
  const steps = parsed.filter(l => l.event === 'shutdown.step').map(l => l.step)
  t.same(steps, ['notify_clients', 'clients_closed', 'rooms_flushed', 'store_closed', 'done'], 'shutdown steps in the documented order')

  const requests = parsed.filter(l => l.event === 'http.request')
  t.match(requests.find(l => l.route === '/api/send'), { level: 30, method: 'POST', statusCode: 200, clientKey: String, responseTime: Number })
  t.ok(requests.some(l => l.route === '/api/status' && l.statusCode === 429), 'the refused request has its line')
  t.notOk(parsed.some(l => (l.msg === 'incoming request' || l.msg === 'request completed') && l.event === undefined), 'no Fastify request lines without an event')

  const info = parsed.filter(l => l.level >= 30).map(l => JSON.stringify(l)).join('\n')
  t.notOk(info.includes(DM_TEXT), 'no direct message text at info level')
  t.notOk(info.includes(ROOM_DATA), 'no room data at info level')
  t.notOk(raw.includes(DM_TEXT) || raw.includes(ROOM_DATA), 'nor at debug level')
  for (const token of [aliceToken, serviceToken]) {
    t.notOk(raw.includes(token.split('.')[2]), 'no token signature at any level')
  }
  t.notOk(raw.includes(SECRET), 'nor the secret')
})

t.test('a token sent to every route, by every spelling of its parameter or in a header, never reaches a log line at trace level', async t => {
  const seen: SeenRoute[] = []
  const built = await build(t, { AUTH_SECRET: SECRET, LOG_LEVEL: 'trace', RATE_LIMIT_MAX: '100000' }, { before: watchRoutes(seen) })
  const { port } = built
  const valid = sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600 })
  const forged = createSigner({ key: 'not-the-secret', algorithm: 'HS256' })({ sub: 'alice' })
  const long = `${'x'.repeat(5000)}.long-token-marker`
  const tokens = [valid, forged, long]
  const carriers = (token: string): Array<[string, Record<string, string>]> => [
    [`?token=${token}`, {}],
    [`?%74oken=${token}`, {}],
    [`?TO%4BEN=${token}`, {}],
    [`?clientId=alice&token=${token}`, {}],
    [`#&token=${token}`, {}],
    [`?access_token=${token}`, {}],
    ['', { authorization: `Bearer ${token}` }],
    ['', { authorization: `Basic ${token}` }]
  ]
  const paths = [...new Set(seen.map(r => concretePath(r.url))), '/no/such/route']
  let requests = 0
  for (const path of paths) {
    for (const token of tokens) {
      for (const [suffix, headers] of carriers(token)) {
        await upgrade(port, `${path}${suffix}`, headers)
        for (const method of ['GET', 'POST']) await send(port, method, `${path}${suffix}`, headers)
        requests += 3
      }
    }
  }
  // a request Node cannot parse: Fastify's own handler would log its raw bytes at trace
  await new Promise<void>(resolve => {
    const socket = connect(port, '127.0.0.1', () => socket.end(`GET /health?token=${valid} HTTP/1.1\r\nHost: x\r\nBad\u0001Header: ${valid}\r\n\r\n`))
    socket.on('close', () => resolve())
    socket.on('error', () => resolve())
    socket.resume()
  })
  await waitFor(() => built.logs().some(l => l.event === 'http.client_error' && l.statusCode === 400), 'the client error line')
  const raw = built.rawLogs()
  t.ok(raw.split('\n').length > requests, `${requests} requests to ${paths.length} paths wrote ${raw.split('\n').length} lines`)
  for (const token of tokens) {
    const signature = token.split('.').at(-1)!
    t.notOk(raw.includes(signature), `no token signature (${signature.slice(0, 12)}…) in the log`)
  }
  t.notOk(raw.includes('x'.repeat(200)), 'no part of the long token either')
  t.notOk(raw.includes('Bad\\u0001Header') || raw.includes('rawPacket'), 'nor the raw bytes of an unparsable request')
  t.ok(raw.includes('[REDACTED]'), 'the places a token would be say [REDACTED]')
})
