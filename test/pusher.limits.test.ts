import { test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Socket } from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { build, tempDir, waitFor } from './support/helper.js'
import { APP, APP_ENV, RawPusher, connected, pusherClient, sdkFor } from './support/pusher-clients.js'

test('WS_MESSAGES_PER_SECOND: frames over the rate get pusher:error 4301 and are dropped, the connection stays; sustained flooding closes with 4100', async t => {
  const s = await build(t, { ...APP_ENV, WS_MESSAGES_PER_SECOND: '5' })
  const raw = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  await raw.established()
  const from = raw.frames.length
  const sentAt = Date.now()
  for (let i = 0; i < 20; i++) raw.send('pusher:ping', {})
  await raw.next(f => f.event === 'pusher:error' && f.data?.code === 4301, 'a 4301', from)
  await waitFor(() => raw.frames.slice(from).length >= 20, 'an answer to every ping')
  const answers = raw.frames.slice(from)
  const pongs = answers.filter(f => f.event === 'pusher:pong').length
  const limited = answers.filter(f => f.event === 'pusher:error' && f.data?.code === 4301)
  // the bucket refills 5 tokens a second: on a loaded machine the 20 frames may take a moment to be handled
  const refilled = Math.ceil((Date.now() - sentAt) / 1000 * 5)
  t.ok(pongs >= 10 && pongs <= 10 + refilled, `the burst (twice the rate) is answered, and no more than the refill: ${pongs} pongs (at most ${10 + refilled})`)
  t.equal(pongs + limited.length, 20, 'every other ping was refused')
  t.match(limited[0].data.message, /at most 5 messages per second per connection/)
  t.equal(raw.ws.readyState, 1, 'the connection stays open')
  await delay(1100)
  const after = raw.frames.length
  raw.send('pusher:ping', {})
  await raw.next(f => f.event === 'pusher:pong', 'a pong once the bucket refilled', after)

  // keep sending over the rate for more than 3 s: closed as Pusher closes an over-capacity connection
  const flood = setInterval(() => { if (raw.ws.readyState === 1) raw.send('pusher:ping', {}) }, 20)
  t.teardown(() => clearInterval(flood))
  const closed = await raw.closed
  clearInterval(flood)
  t.equal(closed.code, 4100)
  t.match(raw.frames.find(f => f.event === 'pusher:error' && f.data?.code === 4100)?.data.message, /Over capacity: more than 5 messages per second/)
  t.match(s.logs().find(l => l.event === 'ws.flood_closed'), { protocol: 'pusher', limit: 5 }, 'the engine closed it, as it closes any protocol\'s flooder')
  t.match(await (await fetch(`${s.url}/metrics`)).text(), /switchboard_pusher_limit_closes_total\{reason="flood"\} 1/)
})

test('pusher-js closed for flooding (4100) reconnects by itself after a back-off', async t => {
  const s = await build(t, { ...APP_ENV, WS_MESSAGES_PER_SECOND: '5' })
  const p = pusherClient(t, s.port)
  await connected(p)
  const first = p.connection.socket_id
  const errors: any[] = []
  p.connection.bind('error', (e: any) => errors.push(e))
  const send = (p as unknown as { send_event (name: string, data: unknown): boolean }).send_event.bind(p)
  const flood = setInterval(() => send('pusher:ping', {}), 20)
  t.teardown(() => clearInterval(flood))
  await waitFor(() => errors.some(e => e?.data?.code === 4100), 'pusher-js saw the 4100', 10000)
  clearInterval(flood)
  await waitFor(() => p.connection.state === 'connected' && p.connection.socket_id !== first, 'reconnected with a new socket', 15000)
  t.pass(`reconnected as ${p.connection.socket_id}`)
})

test('WS_MAX_BUFFERED_BYTES: a Pusher client that stops reading is closed with 4100 once its send buffer passes the cap', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'apps.json')
  writeFileSync(file, JSON.stringify([{ ...APP, maxEventPayloadBytes: 60000 }]))
  const s = await build(t, { PUSHER_APPS_FILE: file, WS_MAX_BUFFERED_BYTES: '262144' })
  const stuck = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  await stuck.established()
  stuck.send('pusher:subscribe', { channel: 'firehose' })
  await stuck.next(f => f.event === 'pusher_internal:subscription_succeeded', 'subscribed')
  const reader = await RawPusher.open(t, s.port, `/app/${APP.key}?protocol=7`)
  await reader.established()
  reader.send('pusher:subscribe', { channel: 'firehose' })
  await reader.next(f => f.event === 'pusher_internal:subscription_succeeded', 'reader subscribed')
  ;(stuck.ws as unknown as { _socket: Socket })._socket.pause() // the peer no longer reads: the kernel buffers fill, then the server's

  const sdk = sdkFor(s.port)
  const data = 'z'.repeat(50000)
  let sent = 0
  await waitFor(async () => {
    if (s.logs().some(l => l.event === 'connection.slow_consumer')) return true
    await sdk.triggerBatch(Array.from({ length: 10 }, () => ({ channel: 'firehose', name: 'chunk', data })))
    sent += 10
    return sent > 2000
  }, 'a slow-consumer close', 60000, 0)
  const line = s.logs().find(l => l.event === 'connection.slow_consumer')
  t.match(line, { protocol: 'pusher' }, `logged as connection.slow_consumer (protocol pusher) after ${sent} events of 50 kB`)
  t.ok(line!.bufferedAmount > 262144 && line!.bufferedAmount < 262144 + 60000, `the buffer was at most one frame past the cap (${line!.bufferedAmount})`)
  ;(stuck.ws as unknown as { _socket: Socket })._socket.resume()
  t.equal((await stuck.closed).code, 4100, 'closed with 4100 (pusher-js reconnects after a back-off)')
  t.equal(reader.ws.readyState, 1, 'the subscriber that reads is untouched')
  await waitFor(() => s.app.pusher.get(APP.id)!.registry.get('firehose')?.subscribers.size === 1, 'the closed socket left the channel')
  const metrics = await (await fetch(`${s.url}/metrics`)).text()
  t.match(metrics, /switchboard_pusher_limit_closes_total\{reason="slow_consumer"\} 1/)
  t.match(metrics, /switchboard_slow_consumer_closes_total\{protocol="pusher"\} 1/, 'counted by the engine, labelled by protocol')
})
