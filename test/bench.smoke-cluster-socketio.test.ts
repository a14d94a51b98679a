import { test } from 'tap'
import { redisTestOptions } from './support/redis-server.js'
import { tinyBench } from './support/bench-run.js'

// S8's comparison server in its own file (see bench.smoke-cluster.test.ts): Socket.IO with
// @socket.io/redis-adapter runs both jobs in the harness and yields its figures.
test('S8 Socket.IO: two instances + Redis run in the harness and record their figures', redisTestOptions(), async t => {
  const s8 = (await tinyBench(t, ['--only', 'S8', '--servers', 'socket.io'])).scenarios.S8
  t.notOk(s8.skipped, `S8 ran (${s8.skipped ?? ''})`)
  t.same(Object.keys(s8.servers), ['socket.io'])
  const io = s8.servers['socket.io']
  t.equal(io.ok, true, `S8 socket.io ran: ${io.error ?? ''}`)
  for (const [path, steps] of [['cross-instance', io.steps], ['same instance', io.same?.steps]]) {
    t.ok(steps?.[0]?.received > 0, `S8 socket.io delivered messages (${path})`)
    t.ok(steps?.[0]?.latencyMs.p99 > 0, `S8 socket.io has a p99 (${path})`)
  }
  t.ok(io.addedP99?.length > 0 && Number.isFinite(io.addedP99[0].addedMs), 'S8 socket.io has the added p99')
  t.ok(io.instances[0].pubsubMessages > 0, 'S8 socket.io: the subscribers\' instance received pub/sub messages')
})
