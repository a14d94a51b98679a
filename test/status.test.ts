import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('/api/status reports every contract field with live counts', async t => {
  const { url, wsUrl } = await build(t, { MAX_CONNECTIONS: '77', MAX_CONNECTIONS_PER_CLIENT: '5', RATE_LIMIT_MAX: '100', RATE_LIMIT_WINDOW_MS: '30000' })
  const a1 = await TestClient.connect(wsUrl, { clientId: 'a' })
  const a2 = await TestClient.connect(wsUrl, { clientId: 'a' })
  const b = await TestClient.connect(wsUrl, { clientId: 'b' })
  t.teardown(() => Promise.all([a1.close(), a2.close(), b.close()]))
  for (const prefix of ['/api', '/api/v1']) {
    const res = await fetch(`${url}${prefix}/status`)
    t.equal(res.status, 200)
    const body = await res.json() as any
    t.match(body, {
      status: 'ok',
      version: '1.0.0',
      uptimeSeconds: Number,
      connections: { total: 3, max: 77, perClientMax: 5, clients: 2 },
      rooms: { active: Number },
      redis: { enabled: false, status: 'disabled' },
      rateLimit: { max: 100, windowMs: 30000 },
      codeExecution: { enabled: false }
    }, prefix)
  }
})

t.test('/health and /ready answer 200 while serving', async t => {
  const { url } = await build(t)
  const health = await fetch(`${url}/health`)
  t.equal(health.status, 200)
  t.same(await health.json(), { status: 'ok' })
  const ready = await fetch(`${url}/ready`)
  t.equal(ready.status, 200)
})

t.test('/ready answers 503 and status says degraded when a health check fails', async t => {
  const { url, app } = await build(t)
  let broken = true
  app.statusReport.check('dependency', () => broken ? 'unreachable' : null)
  const ready = await fetch(`${url}/ready`)
  t.equal(ready.status, 503)
  t.match(await ready.json(), { problems: ['dependency: unreachable'] })
  t.match(await (await fetch(`${url}/api/status`)).json(), { status: 'degraded' })
  broken = false
  t.equal((await fetch(`${url}/ready`)).status, 200)
})
