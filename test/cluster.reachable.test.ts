import t from 'tap'
import { redisTestOptions } from './support/redis-server.js'
import { cluster, connect } from './support/cluster-instances.js'
import { TestClient } from './support/ws-client.js'

// Invariant: a client is reachable cluster-wide before its `welcome` is sent, so
// a direct message sent by anyone after the welcome is delivered live, never queued.
t.test('a direct message sent right after the welcome on another instance is delivered, 200 of 200', redisTestOptions(), async t => {
  const { instances: [a, b, c] } = await cluster(t, 3)
  const senders = [await connect(t, a.wsUrl, 'sender-a'), await connect(t, b.wsUrl, 'sender-b'), await connect(t, c.wsUrl, 'sender-c')]
  const urls = [a.wsUrl, b.wsUrl, c.wsUrl]
  let queued = 0
  let received = 0
  for (let i = 0; i < 200; i++) {
    const to = `target-${i}`
    // the recipient on one instance, the sender on another
    const recipient = await TestClient.connect(urls[i % 3], { clientId: to })
    const sender = senders[(i + 1 + (i % 2)) % 3]
    const ack = await sender.request({ type: 'send', to, text: `try ${i}` })
    if (ack.queued !== false || ack.delivered !== 1) queued++
    else if ((await recipient.next('message')).text === `try ${i}`) received++
    await recipient.close()
  }
  t.equal(queued, 0, 'no message sent after the welcome was queued')
  t.equal(received, 200, 'each recipient got its message live')
})
