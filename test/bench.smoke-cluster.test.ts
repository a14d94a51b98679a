import { test } from 'tap'
import { redisTestOptions } from './support/redis-server.js'
import { tinyBench } from './support/bench-run.js'

// S8 on a private redis-server, one server kind per file (each run starts a redis-server,
// three instances and a generator twice; both kinds in one file outlasted tap's per-file
// timeout on a loaded machine). Both jobs ran, and Switchboard's third instance, which no
// client ever connects to, received no pub/sub message at all (the property S8 exists for).
test('S8 Switchboard: two instances + Redis deliver, and an instance without members receives nothing', redisTestOptions(), async t => {
  const s8 = (await tinyBench(t, ['--only', 'S8', '--servers', 'switchboard'])).scenarios.S8
  t.notOk(s8.skipped, `S8 ran (${s8.skipped ?? ''})`)
  t.same(Object.keys(s8.servers), ['switchboard'])
  const sb = s8.servers.switchboard
  t.equal(sb.ok, true, `S8 switchboard ran: ${sb.error ?? ''}`)
  for (const [path, steps] of [['cross-instance', sb.steps], ['same instance', sb.same?.steps]]) {
    t.ok(steps?.[0]?.received > 0, `S8 switchboard delivered messages (${path})`)
    t.ok(steps?.[0]?.latencyMs.p99 > 0, `S8 switchboard has a p99 (${path})`)
  }
  t.ok(sb.addedP99?.length > 0 && Number.isFinite(sb.addedP99[0].addedMs), 'S8 switchboard has the added p99')
  // the subscribers' instance heard the publishers' instance through Redis: the counter counts
  t.ok(sb.instances[0].pubsubMessages > 0, 'S8 switchboard: the subscribers\' instance received pub/sub messages')
  t.equal(sb.memberless.pubsubMessages, 0, 'the Switchboard instance without members received 0 pub/sub messages (IPC)')
  t.equal(sb.memberless.metrics?.received, 0, 'and its /metrics says the same')
  t.equal(sb.same.memberless.pubsubMessages, 0, 'nor in the same-instance run')
})
