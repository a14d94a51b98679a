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

// S8 on a private redis-server: both server kinds ran both jobs, and Switchboard's third instance,
// which no client ever connects to, received no pub/sub message at all (the property S8 exists for).
test('S8: two instances + Redis run for Switchboard and Socket.IO, and an instance without members receives nothing', redisTestOptions(), async t => {
  const out = tempDir(t, 'switchboard-bench-smoke-s8-')
  await run(process.execPath, [runner, '--tiny', '--no-docs', '--only', 'S8', '--out', out])
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
