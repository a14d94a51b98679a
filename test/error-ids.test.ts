import t from 'tap'
import { build, waitFor } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('every error reply echoes the request id, rate_limited from the token bucket included', async t => {
  const { wsUrl } = await build(t, { WS_MESSAGES_PER_SECOND: '5' })
  const c = await TestClient.connect(wsUrl, { clientId: 'ider' })
  t.teardown(() => c.close())
  // burst is 2x the rate: 10 pass, the rest are refused by the bucket
  for (let i = 0; i < 20; i++) c.send({ type: 'ping', id: `p${i}` })
  await c.waitFor(m => m.id === 'p19', 'the reply to the last ping')
  const limited = c.all('error').filter(e => e.code === 'rate_limited')
  t.ok(limited.length >= 5, `${limited.length} rate_limited replies`)
  t.ok(limited.every(e => typeof e.id === 'string' && e.id.startsWith('p')), 'each names its request')
  t.same(new Set(limited.map(e => e.id)).size, limited.length, 'each request once')

  // a fresh connection has a full bucket (10 frames): the other error paths
  const d = await TestClient.connect(wsUrl, { clientId: 'ider' })
  t.teardown(() => d.close())
  const cases: Array<[unknown, string]> = [
    [{ type: 'nope', id: 7 }, 'unknown_type'],
    [{ type: 'join', id: 'bad-room', room: '' }, 'invalid_message'],
    [{ type: 'publish', id: 'not-member', room: 'r', data: 1 }, 'not_in_room'],
    [{ type: 'exec', id: 'disabled', room: 'r', code: '1' }, 'code_execution_disabled']
  ]
  for (const [frame, code] of cases) {
    const id = (frame as { id: unknown }).id
    d.send(frame as Record<string, unknown>)
    t.match(await d.waitFor(m => m.id === id, `the reply to ${String(id)}`), { type: 'error', code, id }, `${code} carries id ${String(id)}`)
  }
})

t.test('the close-code label of the closes metric is bucketed: clients choosing codes 3000-4999 add at most the fixed series', async t => {
  const { wsUrl, url } = await build(t, { MAX_CONNECTIONS_PER_CLIENT: '1000', MAX_CONNECTIONS: '2000' })
  const codes: number[] = [1000]
  for (let code = 3000; code <= 4999; code += 5) codes.push(code)
  for (let i = 0; i < codes.length; i += 50) {
    await Promise.all(codes.slice(i, i + 50).map(async code => {
      const c = await TestClient.connect(wsUrl)
      c.ws.close(code, 'chosen by the client')
      await c.closed
    }))
  }
  const closes = () => fetch(`${url}/metrics`).then(r => r.text()).then(text => text.split('\n').filter(l => l.startsWith('switchboard_ws_connection_closes_total{')))
  await waitFor(async () => (await closes()).reduce((n, l) => n + Number(l.split(' ').pop()), 0) >= codes.length, 'every close counted')
  const series = await closes()
  const labels = series.map(l => /code="([^"]*)"/.exec(l)?.[1])
  t.comment(`${codes.length} closes with ${codes.length} distinct codes → ${series.length} series: ${labels.join(', ')}`)
  const allowed = ['1000', '1001', '1006', '1008', '1009', '1011', '1013', '4xxx', 'other']
  t.ok(labels.every(l => l !== undefined && allowed.includes(l)), 'every label is one of the fixed buckets')
  t.same(labels.sort(), ['1000', '4xxx', 'other'], 'here: 1000, the 4xxx application codes, and the rest as other')
  t.match(series.find(l => l.includes('code="4xxx"')), / 200$/, '4000-4999 in steps of 5: 200 closes in one series')
})
