import t from 'tap'
import { tempDir, waitFor } from './support/helper.js'
import { freePort, startServerOnPort } from './support/fixed-port-server.js'
import { SwitchboardClient, type GapEvent } from '../client/index.js'

const TOTAL = 500
const RESTART_AFTER_ACKS = [150, 350]

t.test('a subscriber gets 500 numbered room messages exactly once, in order, while the server restarts twice', async t => {
  const port = await freePort()
  // a fixed port and one data directory: the restarted server is the same service with the same store.
  // History holds all 500, so a subscriber slowed by a busy machine still recovers fully; what a
  // client does when history runs out (a gap) is tested in client.test.ts.
  const env = { DATA_DIR: tempDir(t), WS_MESSAGES_PER_SECOND: '1000', SHUTDOWN_GRACE_MS: '5000', ROOM_HISTORY_SIZE: String(TOTAL) }
  let server = await startServerOnPort(t, port, env)

  const reconnect = { initialDelayMs: 100, maxDelayMs: 1000 }
  const subscriber = new SwitchboardClient({ url: server.url, clientId: 'subscriber', reconnect })
  const publisher = new SwitchboardClient({ url: server.url, clientId: 'publisher', reconnect })
  t.teardown(() => Promise.all([subscriber.close(), publisher.close()]))
  await Promise.all([subscriber.connect(), publisher.connect()])

  const received: number[] = []
  const gaps: GapEvent[] = []
  let reopened = 0
  subscriber.on('open', () => reopened++)
  subscriber.on('gap', g => gaps.push(g))
  const subRoom = await subscriber.join<number>('restart-test')
  subRoom.on('message', m => received.push(m.data))
  const pubRoom = await publisher.join<number>('restart-test')

  let acked = 0
  const publishing = (async () => {
    for (let n = 1; n <= TOTAL; n++) {
      await pubRoom.publish(n)
      acked = n
    }
  })()
  // a failure of the publisher must fail the test now, not after the restarts
  publishing.catch(() => {})

  for (const [i, after] of RESTART_AFTER_ACKS.entries()) {
    await Promise.race([waitFor(() => acked >= after, `${after} acknowledged publishes`, 30000), publishing])
    // on a busy machine the publisher can come back and race ahead while the subscriber is still in
    // its backoff; the next restart must find the subscriber connected too, or it would sit out a
    // whole server lifetime and the test would cover one restart, not two
    await waitFor(() => reopened >= i, `the subscriber back after restart ${i}`, 30000)
    t.equal(await server.stop('SIGTERM'), 0, `graceful stop after ${acked} publishes exits with 0`)
    server = await startServerOnPort(t, port, env)
  }
  await publishing
  // the publisher can finish before the last stop: the subscriber then has all 500 and is still in its backoff
  await waitFor(() => reopened >= RESTART_AFTER_ACKS.length, 'the subscriber back after the last restart')
  await waitFor(() => received.length >= TOTAL, `${TOTAL} messages at the subscriber`, 30000).catch(err => {
    throw new Error(`${err.message}: got ${received.length}, gaps ${JSON.stringify(gaps)}`)
  })
  // anything duplicated would arrive right behind the last message
  await new Promise(resolve => setTimeout(resolve, 300))

  t.equal(received.length, TOTAL, 'each message delivered once')
  t.same(received, Array.from({ length: TOTAL }, (_, i) => i + 1), 'in the order they were published')
  t.same(gaps, [], 'no gap was reported')
  t.equal(reopened, RESTART_AFTER_ACKS.length, 'the subscriber reconnected after each restart')
  t.equal(subRoom.offset, pubRoom.offset, 'both clients end at the same offset')
})
