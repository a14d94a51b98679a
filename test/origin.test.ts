import t from 'tap'
import { build } from './helper.js'
import { tryUpgrade } from './ws-client.js'

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
