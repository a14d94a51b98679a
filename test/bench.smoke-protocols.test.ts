import { test } from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { tempDir } from './support/helper.js'

const run = promisify(execFile)
const runner = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'run.js')

// S9 (Pusher fan-out next to native) and S10 (Yjs against @hocuspocus/server) run their own scripts: both yield figures
test('S9 and S10: the Pusher and Yjs scenarios run inside the harness and record their figures', async t => {
  const out = tempDir(t, 'switchboard-bench-smoke-s9-')
  await run(process.execPath, [runner, '--tiny', '--no-docs', '--only', 'S9,S10', '--out', out])
  const file = readdirSync(out).find(f => f.startsWith('latest-tiny'))
  const results = JSON.parse(readFileSync(join(out, file as string), 'utf8'))
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
