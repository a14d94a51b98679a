import { test } from 'tap'
import { tinyBench } from './support/bench-run.js'

// S6 in its own file (see bench.smoke.test.ts): Switchboard's POST /api/send, bare Fastify's
// constant answer and bare Fastify delivering one WebSocket frame all take requests.
test('S6: the HTTP scenario runs all three servers with tiny parameters and records numbers', async t => {
  const results = await tinyBench(t, ['--only', 'S6'])
  for (const name of ['switchboard', 'fastify-hello', 'fastify-deliver']) {
    const r = results.scenarios.S6.servers[name]
    t.equal(r.ok, true, `S6 ${name} ran`)
    t.ok(r.requestsPerSecond > 0, `S6 ${name} answered requests`)
    t.equal(r.non2xx, 0, `S6 ${name} answered every request with 2xx`)
  }
})
