import t from 'tap'
import { build, type TestContext } from './support/helper.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'
import { cluster, clusterEnv, connect } from './support/cluster-instances.js'
import { TestClient } from './support/ws-client.js'

/**
 * Publishes to `room` continuously from `publishUrl` while `joiners` clients
 * join and leave it `rounds` times each; every join must be followed by every
 * message after the offset in its `joined`: in `missed` (when it asked with
 * `since`) and then live, in order, with no gap. Resolves with the gaps seen.
 */
async function joinsUnderPublishing (t: TestContext, publishUrl: string, joinUrls: string[], room: string, joins = 500): Promise<{ gaps: string[], joins: number, published: number }> {
  const publishers = await Promise.all([1, 2, 3, 4].map(i => connect(t, publishUrl, `${room}-pub-${i}`)))
  for (const p of publishers) await p.request({ type: 'join', room })
  const run = { publishing: true }
  let published = 0
  const publishLoops = publishers.map(async p => {
    while (run.publishing) {
      await p.request({ type: 'publish', room, data: published }, 10000)
      published++
    }
  })
  const gaps: string[] = []
  let done = 0
  const joiners = 10
  const loops = Array.from({ length: joiners }, async (_, j) => {
    const client = await TestClient.connect(joinUrls[j % joinUrls.length], { clientId: `${room}-joiner-${j}` })
    t.teardown(() => client.close())
    for (let round = 0; done < joins; round++) {
      done++
      const withSince = round % 2 === 1
      const since = withSince ? Math.max(0, published - 3) : undefined
      const joined = await client.request({ type: 'join', room, ...(since === undefined ? {} : { since }) }, 10000)
      if (joined.type !== 'joined') throw new Error(`join failed: ${JSON.stringify(joined)}`)
      const offsets: number[] = joined.missed.map((m: { offset: number }) => m.offset)
      let expected = since !== undefined && joined.recovered ? since + 1 : joined.offset + 1
      for (const o of offsets) {
        if (o !== expected) gaps.push(`joiner ${j} round ${round}: missed had ${o}, expected ${expected}`)
        expected = o + 1
      }
      if (expected !== joined.offset + 1) gaps.push(`joiner ${j} round ${round}: missed ended at ${expected - 1}, joined.offset is ${joined.offset}`)
      // the next three live messages must follow joined.offset without a gap
      for (let k = 0; k < 3; k++) {
        // (frames of the previous round, which arrived before its leave, are older than this joined's offset)
        const m = await client.waitFor(m => m.type === 'room_message' && m.offset > joined.offset, `live message after offset ${expected - 1}`, 10000)
        if (m.offset !== expected) {
          gaps.push(`joiner ${j} round ${round}: live ${m.offset} after joined offset ${joined.offset}, expected ${expected}`)
          break
        }
        expected++
      }
      await client.request({ type: 'leave', room }, 10000)
    }
  })
  await Promise.all(loops)
  run.publishing = false
  await Promise.all(publishLoops)
  return { gaps, joins: done, published }
}

t.test('no gap on join', async t => {
  t.test('SQLite, one instance', async t => {
    const app = await build(t, { RATE_LIMIT_MAX: '100000', WS_MESSAGES_PER_SECOND: '1000', MAX_CONNECTIONS_PER_CLIENT: '1000' })
    const r = await joinsUnderPublishing(t, app.wsUrl, [app.wsUrl], 'sqlite-room')
    t.same(r.gaps, [], `${r.joins} joins while ${r.published} messages were published: ${r.gaps.length} gaps`)
  })

  t.test('Redis, one instance', redisTestOptions(), async t => {
    const redis = await startRedis(t)
    const app = await build(t, clusterEnv(redis))
    const r = await joinsUnderPublishing(t, app.wsUrl, [app.wsUrl], 'redis-one')
    t.same(r.gaps, [], `${r.joins} joins while ${r.published} messages were published: ${r.gaps.length} gaps`)
  })

  t.test('Redis, two instances (child processes)', redisTestOptions(), async t => {
    const { instances: [a, b] } = await cluster(t, 2)
    const r = await joinsUnderPublishing(t, a.wsUrl, [a.wsUrl, b.wsUrl], 'redis-two')
    t.same(r.gaps, [], `${r.joins} joins while ${r.published} messages were published: ${r.gaps.length} gaps`)
  })
})
