// Pusher cache channels keep their last event in the store, not in process
// memory (issue 26, row 10).
import t from 'tap'
import { build } from './support/helper.js'
import { APP_ENV, sdkFor } from './support/pusher-clients.js'
import { pusher, type PusherConnection } from './support/doors.js'

t.test('1,000 cache channels written once: restarted on the same DATA_DIR, a new subscriber of one gets its last event (row 10)', async t => {
  const env = { ...APP_ENV, RATE_LIMIT_MAX: '100000' }
  const first = await build(t, env)
  const sdk = sdkFor(first.port)
  for (let batch = 0; batch < 100; batch++) {
    await sdk.triggerBatch(Array.from({ length: 10 }, (_, i) => ({ channel: `cache-c${batch * 10 + i}`, name: 'last', data: { n: batch * 10 + i } })))
  }
  await first.app.close()

  const second = await build(t, env, { dataDir: first.dataDir })
  for (const n of [0, 500, 999]) {
    const conn = await pusher.open(second, { setUp: false }) as PusherConnection
    t.teardown(() => conn.close())
    const channel = `cache-c${n}`
    const from = conn.frames.length
    const answer = await conn.subscribe(channel)
    t.equal(answer.event, 'pusher_internal:subscription_succeeded', `subscribed to ${channel}`)
    const last = await conn.next(f => f.channel === channel && (f.event === 'last' || f.event === 'pusher:cache_miss'), `the last event of ${channel} or a cache miss`, from)
    t.equal(last.event, 'last', `${channel}: its last event, not a cache miss`)
    if (last.event === 'last') t.same(last.parsed, { n })
  }
})
