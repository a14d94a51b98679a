import t from 'tap'
import parse from 'parse-prometheus-text-format'
import { build } from './support/helper.js'
import { TestClient, tryUpgrade } from './support/ws-client.js'

async function scrape (url: string) {
  const res = await fetch(`${url}/metrics`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^text\/plain/)
  const families = parse(await res.text())
  const value = (name: string, labels: Record<string, string> = {}) => {
    const family = families.find(f => f.name === name)
    if (!family) return undefined
    const sample = family.metrics.find(m => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
    if (!sample) return 0
    return Number(sample.value ?? sample.count)
  }
  return { families, value }
}

t.test('/metrics is Prometheus text with switchboard_ names, process metrics included', async t => {
  const { url } = await build(t)
  const { families } = await scrape(url)
  const names = families.map(f => f.name)
  for (const name of [
    'switchboard_ws_connections', 'switchboard_ws_connection_rejections_total', 'switchboard_ws_messages_in_total',
    'switchboard_http_request_duration_seconds', 'switchboard_rooms_active', 'switchboard_broadcast_fanout',
    'switchboard_store_write_duration_seconds', 'switchboard_process_cpu_seconds_total', 'switchboard_nodejs_eventloop_lag_seconds'
  ]) t.ok(names.includes(name), name)
  t.ok(names.every(n => n.startsWith('switchboard_')), 'every name has the prefix')
})

t.test('counters move with known traffic', async t => {
  const { url, wsUrl, app } = await build(t, { MAX_CONNECTIONS: '2', CORS_ORIGINS: 'http://ok.test' })
  const before = await scrape(url)
  const a = await TestClient.connect(wsUrl, { clientId: 'a' })
  const b = await TestClient.connect(wsUrl, { clientId: 'b', localAddress: '127.0.0.5' })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  for (let i = 0; i < 3; i++) t.equal((await tryUpgrade(wsUrl, { localAddress: `127.0.0.${10 + i}` })).status, 503)
  t.equal((await tryUpgrade(wsUrl, { headers: { origin: 'http://evil.test' } })).status, 403)
  await a.request({ type: 'ping' })
  await a.request({ type: 'ping' })
  await a.request({ type: 'send', to: 'b', text: 'hi' })
  a.send('garbage')
  await a.next('error')
  await fetch(`${url}/api/status`)

  const after = await scrape(url)
  const delta = (name: string, labels?: Record<string, string>) => (after.value(name, labels) ?? 0) - (before.value(name, labels) ?? 0)
  t.equal(delta('switchboard_ws_connection_rejections_total', { reason: 'total' }), 3, '3 rejected by the total limit')
  t.equal(delta('switchboard_ws_connection_rejections_total', { reason: 'origin' }), 1, '1 rejected by origin')
  t.equal(after.value('switchboard_ws_connections'), 2, 'two open connections')
  t.equal(delta('switchboard_ws_connection_attempts_total'), 6)
  t.equal(delta('switchboard_ws_messages_in_total', { type: 'ping' }), 2)
  t.equal(delta('switchboard_ws_messages_in_total', { type: 'send' }), 1)
  t.equal(delta('switchboard_ws_errors_total', { code: 'invalid_message' }), 1)
  // the text parser flattens labelled histograms, so this one is read from prom-client itself
  const histogram = await app.metrics.httpDuration.get()
  const count = histogram.values.find(v => v.metricName === 'switchboard_http_request_duration_seconds_count' && v.labels.route === '/api/status' && v.labels.status_code === '200')
  t.equal(count?.value, 1, 'one /api/status request observed')
})

t.test('HTTP 429s and WebSocket rate limiting are counted', async t => {
  const { url, wsUrl } = await build(t, { RATE_LIMIT_MAX: '1', WS_MESSAGES_PER_SECOND: '1' })
  await fetch(`${url}/api/status`)
  t.equal((await fetch(`${url}/api/status`)).status, 429)
  const c = await TestClient.connect(wsUrl)
  t.teardown(() => c.close())
  for (let i = 0; i < 4; i++) c.send({ type: 'ping' })
  await c.next('error')
  const { value } = await scrape(url)
  t.equal(value('switchboard_rate_limited_total', { transport: 'http' }), 1)
  t.ok((value('switchboard_rate_limited_total', { transport: 'ws' }) ?? 0) >= 1)
})

t.test('room traffic moves the room, fan-out, store and inbox metrics', async t => {
  const { url, wsUrl, app } = await build(t)
  const clients = await Promise.all(['a', 'b', 'c'].map(id => TestClient.connect(wsUrl, { clientId: id })))
  t.teardown(() => Promise.all(clients.map(c => c.close())))
  for (const c of clients) await c.request({ type: 'join', room: 'lobby' })
  await clients[0].request({ type: 'publish', room: 'lobby', data: 'hello' })
  await clients[0].request({ type: 'update', room: 'lobby', patch: { topic: 'x' } })
  await clients[0].request({ type: 'send', to: 'nobody-online', text: 'later' })

  const { families, value } = await scrape(url)
  t.equal(value('switchboard_rooms_active'), 1)
  t.equal(value('switchboard_room_members'), 3)
  t.equal(value('switchboard_ws_messages_out_total', { type: 'room_message' }), 3, 'one publish reached 3 members')
  t.equal(value('switchboard_ws_messages_out_total', { type: 'state' }), 3)
  t.equal(value('switchboard_inbox_queued_total'), 1)
  const fanout = families.find(f => f.name === 'switchboard_broadcast_fanout')!.metrics[0] as any
  t.ok(Number(fanout.count) >= 2, 'broadcasts observed')
  const batches = await app.metrics.storeBatchSize.get()
  const commits = batches.values.find(v => v.metricName === 'switchboard_store_batch_size_count' && v.labels.store === 'sqlite')
  t.ok((commits?.value ?? 0) >= 2, 'committed batches observed')
})
