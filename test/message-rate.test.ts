import t from 'tap'
import { build, waitFor } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { MessageRate } from '../plugins/engine/message-rate.js'

t.test('the rate is the average of the last one-second slots', async t => {
  let received = 0
  let out = 0
  const rate = new MessageRate(() => received, () => out, 4)
  t.same(rate.report(), { inPerSecond: 0, outPerSecond: 0, windowSeconds: 4 }, 'zero before the first second closes')
  received += 10
  out += 20
  rate.tick()
  t.same(rate.report(), { inPerSecond: 10, outPerSecond: 20, windowSeconds: 4 })
  rate.tick()
  t.same(rate.report(), { inPerSecond: 5, outPerSecond: 10, windowSeconds: 4 })
  for (let i = 0; i < 4; i++) rate.tick()
  t.same(rate.report(), { inPerSecond: 0, outPerSecond: 0, windowSeconds: 4 }, 'old seconds leave the window')
})

t.test('/api/status reports messages in and out per second', async t => {
  // the poll below stays far under this, and a 429 fails loudly instead of being polled through
  const { url, wsUrl } = await build(t, { RATE_LIMIT_MAX: '1000' })
  const c = await TestClient.connect(wsUrl, { clientId: 'counter' })
  t.teardown(() => c.close())
  for (let i = 0; i < 10; i++) await c.request({ type: 'ping' })
  let messages = { inPerSecond: 0, outPerSecond: 0 }
  await waitFor(async () => {
    const res = await fetch(`${url}/api/status`)
    if (res.status !== 200) throw new Error(`/api/status answered ${res.status}: the poll must not trip the service's own limits`)
    const body = await res.json() as { messages: typeof messages }
    messages = body.messages
    return messages.inPerSecond > 0
  }, 'a non-zero rate', 4000, 100)
  t.ok(messages.inPerSecond >= 10 / 5 && messages.inPerSecond <= 10, `10 pings over a 5 s window: ${messages.inPerSecond}/s in`)
  t.ok(messages.outPerSecond >= messages.inPerSecond, `pongs and welcome go out: ${messages.outPerSecond}/s out`)
})
