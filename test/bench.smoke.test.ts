import { test } from 'tap'
import { tinyBench } from './support/bench-run.js'

// One scenario group per file (S6 in bench.smoke-http, S8 in bench.smoke-cluster*, S9 and
// S10 in bench.smoke-protocols): each run starts several servers, and on a loaded machine
// one file of them all outlasted tap's per-file timeout (.taprc). No deadline of its own:
// the run ends when the harness exits.
// Only that the harness works end to end: every server starts, takes load and yields figures.
test('the quick benchmark harness runs every server with tiny parameters and records numbers', async t => {
  const results = await tinyBench(t, ['--only', 'S1,S2'])

  const s1 = results.scenarios.S1.servers
  t.same(Object.keys(s1).sort(), ['raw-ws', 'socket.io', 'switchboard'])
  for (const [name, r] of Object.entries<any>(s1)) {
    t.equal(r.ok, true, `S1 ${name} ran`)
    t.ok(r.connections > 0 && Number.isFinite(r.rssBytesPerConnection), `S1 ${name} weighed its connections`)
  }

  const s2 = results.scenarios.S2.servers
  t.same(Object.keys(s2).sort(), ['raw-ws', 'socket.io', 'switchboard', 'switchboard-nohistory'])
  for (const [name, r] of Object.entries<any>(s2)) {
    t.equal(r.ok, true, `S2 ${name} ran`)
    const step = r.steps[0]
    t.ok(step.received > 0, `S2 ${name} delivered messages`)
    t.ok(step.latencyMs.p99 > 0 && step.serverCpuMs >= 0, `S2 ${name} has latency and CPU figures`)
  }
})
