import t from 'tap'
import { build, waitFor } from './helper.js'
import { TestClient } from './ws-client.js'
import { MessageRate } from '../plugins/message-rate.js'

t.test('the rate is the average of the last one-second slots', async t => {
  let out = 0
  const rate = new MessageRate(() => out, 4)
  t.same(rate.report(), { inPerSecond: 0, outPerSecond: 0, windowSeconds: 4 }, 'zero before the first second closes')
  rate.framesIn += 10
  out += 20
  rate.tick()
  t.same(rate.report(), { inPerSecond: 10, outPerSecond: 20, windowSeconds: 4 })
  rate.tick()
  t.same(rate.report(), { inPerSecond: 5, outPerSecond: 10, windowSeconds: 4 })
  for (let i = 0; i < 4; i++) rate.tick()
  t.same(rate.report(), { inPerSecond: 0, outPerSecond: 0, windowSeconds: 4 }, 'old seconds leave the window')
})

t.test('/api/status reports messages in and out per second', async t => {
  const { url, wsUrl } = await build(t)
  const c = await TestClient.connect(wsUrl, { clientId: 'counter' })
  t.teardown(() => c.close())
  for (let i = 0; i < 10; i++) await c.request({ type: 'ping' })
  let messages = { inPerSecond: 0, outPerSecond: 0 }
  await waitFor(async () => {
    const body = await (await fetch(`${url}/api/status`)).json() as { messages: typeof messages }
    messages = body.messages
    return messages.inPerSecond > 0
  }, 'a non-zero rate', 4000)
  t.ok(messages.inPerSecond >= 10 / 5 && messages.inPerSecond <= 10, `10 pings over a 5 s window: ${messages.inPerSecond}/s in`)
  t.ok(messages.outPerSecond >= messages.inPerSecond, `pongs and welcome go out: ${messages.outPerSecond}/s out`)
})
