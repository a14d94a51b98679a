import { test } from 'tap'
import { tinyBench } from './support/bench-run.js'

// S9 (Pusher fan-out next to native) and S10 (Yjs against @hocuspocus/server) run their own scripts: both yield figures
test('S9 and S10: the Pusher and Yjs scenarios run inside the harness and record their figures', async t => {
  const results = await tinyBench(t, ['--only', 'S9,S10'])
  for (const name of ['pusher', 'native']) {
    const r = results.scenarios.S9.servers[name]
    t.equal(r.ok, true, `S9 ${name} ran: ${r.error ?? ''}`)
    t.ok(r.deliveriesPerSec > 0 && r.serverCpuUsPerDelivery > 0, `S9 ${name} delivered, with a CPU figure`)
    t.equal(r.subscribers, 20)
  }
  for (const name of ['switchboard', 'hocuspocus']) {
    const r = results.scenarios.S10.servers[name]
    t.equal(r.ok, true, `S10 ${name} ran: ${r.error ?? ''}`)
    const step = r.steps[0]
    t.ok(step.deliveryReceived > 0 && Number.isFinite(step.p99Ms), `S10 ${name} delivered updates, with a p99`)
    t.ok(step.serverRssPerOpenDocumentKB !== undefined && step.serverCpuUsPerUpdate > 0, `S10 ${name} has memory and CPU figures`)
  }
})
