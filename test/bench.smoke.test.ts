import { test } from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { tempDir } from './support/helper.js'
import { redisTestOptions } from './support/redis-server.js'

const run = promisify(execFile)
const runner = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'run.js')

// Only that the harness works end to end: every server starts, takes load and yields figures.
test('the quick benchmark harness runs every server with tiny parameters and records numbers', { timeout: 180000 }, async t => {
  const out = tempDir(t, 'switchboard-bench-smoke-')
  await run(process.execPath, [runner, '--tiny', '--no-docs', '--only', 'S1,S2,S6', '--out', out], { timeout: 170000 })
  const file = readdirSync(out).find(f => f.startsWith('latest-tiny'))
  t.ok(file, 'a results file is written')
  const results = JSON.parse(readFileSync(join(out, file as string), 'utf8'))

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

  for (const name of ['switchboard', 'fastify-hello', 'fastify-deliver']) {
    const r = results.scenarios.S6.servers[name]
    t.equal(r.ok, true, `S6 ${name} ran`)
    t.ok(r.requestsPerSecond > 0, `S6 ${name} answered requests`)
    t.equal(r.non2xx, 0, `S6 ${name} answered every request with 2xx`)
  }
})

// S8 on a private redis-server: both server kinds ran both jobs, and Switchboard's third instance,
// which no client ever connects to, received no pub/sub message at all (the property S8 exists for).
test('S8: two instances + Redis run for Switchboard and Socket.IO, and an instance without members receives nothing', { timeout: 180000, ...redisTestOptions() }, async t => {
  const out = tempDir(t, 'switchboard-bench-smoke-s8-')
  await run(process.execPath, [runner, '--tiny', '--no-docs', '--only', 'S8', '--out', out], { timeout: 170000 })
  const file = readdirSync(out).find(f => f.startsWith('latest-tiny'))
  const results = JSON.parse(readFileSync(join(out, file as string), 'utf8'))
  const s8 = results.scenarios.S8
  t.notOk(s8.skipped, `S8 ran (${s8.skipped ?? ''})`)
  t.same(Object.keys(s8.servers).sort(), ['socket.io', 'switchboard'])
  for (const [name, r] of Object.entries<any>(s8.servers)) {
    t.equal(r.ok, true, `S8 ${name} ran: ${r.error ?? ''}`)
    for (const [path, steps] of [['cross-instance', r.steps], ['same instance', r.same?.steps]]) {
      t.ok(steps?.[0]?.received > 0, `S8 ${name} delivered messages (${path})`)
      t.ok(steps?.[0]?.latencyMs.p99 > 0, `S8 ${name} has a p99 (${path})`)
    }
    t.ok(r.addedP99?.length > 0 && Number.isFinite(r.addedP99[0].addedMs), `S8 ${name} has the added p99`)
    // the subscribers' instance heard the publishers' instance through Redis: the counter counts
    t.ok(r.instances[0].pubsubMessages > 0, `S8 ${name}: the subscribers' instance received pub/sub messages`)
  }
  const sb = s8.servers.switchboard
  t.equal(sb.memberless.pubsubMessages, 0, 'the Switchboard instance without members received 0 pub/sub messages (IPC)')
  t.equal(sb.memberless.metrics?.received, 0, 'and its /metrics says the same')
  t.equal(sb.same.memberless.pubsubMessages, 0, 'nor in the same-instance run')
})

// S9 (Pusher fan-out next to native) and S10 (Yjs against @hocuspocus/server) run their own scripts: both yield figures
test('S9 and S10: the Pusher and Yjs scenarios run inside the harness and record their figures', { timeout: 180000 }, async t => {
  const out = tempDir(t, 'switchboard-bench-smoke-s9-')
  await run(process.execPath, [runner, '--tiny', '--no-docs', '--only', 'S9,S10', '--out', out], { timeout: 170000 })
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
