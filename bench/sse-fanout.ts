/**
 * SSE and HTTP streaming next to /ws, in the same run and process:
 *   npm run bench:sse [-- --subscribers 1000 --events 200]
 * One server child process (dist/server.js). For each door in turn (/ws,
 * /sse, /stream): --subscribers clients are in one room (a /ws `join`, or
 * `?rooms=bench`), and --events messages go through
 * POST /api/v1/rooms/:room/publish, --inflight at a time. For each: HTTP
 * publishes/s, deliveries/s, and the server's CPU time per delivery
 * (/proc schedstat), and the ratio of each stream's CPU per delivery to /ws's.
 */
import http from 'node:http'
import { parseArgs } from 'node:util'
import { cpuMs } from './cpu.js'
import WebSocket from 'ws'
import { startBenchServer, type BenchServer } from './server-process.js'

const { values } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '1000' },
    events: { type: 'string', default: '200' },
    inflight: { type: 'string', default: '8' }
  }
})
const SUBSCRIBERS = Number(values.subscribers)
const EVENTS = Number(values.events)
const INFLIGHT = Number(values.inflight)
const MARK = '"type":"room_message"'

async function startServer (): Promise<BenchServer> {
  return await startBenchServer('sse')
}

/** One subscriber: counts the room messages it receives; `close` ends it. */
interface Subscriber { close: () => void }

/** A /ws client in the room; `ready` once joined. */
function wsSubscriber (port: number, onMessage: () => void): Promise<Subscriber> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`)
    ws.once('error', reject)
    ws.once('open', () => ws.send(JSON.stringify({ type: 'join', room: 'bench' })))
    ws.on('message', data => {
      const text = data.toString()
      if (text.includes(MARK)) onMessage()
      else if (text.includes('"type":"joined"')) resolve({ close: () => ws.terminate() })
    })
  })
}

/** An SSE or NDJSON client in the room (plain http.get); `ready` once its `joined` event came. */
function streamSubscriber (port: number, path: string, onMessage: () => void): Promise<Subscriber> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `${path}?rooms=bench`, agent: false }, res => {
      let carry = ''
      let joined = false
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        const text = carry + chunk
        let at = text.indexOf(MARK)
        while (at >= 0) {
          onMessage()
          at = text.indexOf(MARK, at + MARK.length)
        }
        if (!joined && text.includes('"type":"joined"')) {
          joined = true
          resolve({ close: () => req.destroy() })
        }
        carry = text.slice(-MARK.length + 1)
      })
    })
    req.once('error', reject)
  })
}

async function openMany (n: number, open: () => Promise<Subscriber>): Promise<Subscriber[]> {
  const all: Subscriber[] = []
  for (let i = 0; i < n; i += 100) all.push(...await Promise.all(Array.from({ length: Math.min(100, n - i) }, open)))
  return all
}

async function measure (door: string, port: number, pid: number, open: (onMessage: () => void) => Promise<Subscriber>) {
  const expected = SUBSCRIBERS * EVENTS
  let received = 0
  let resolveAll: () => void = () => {}
  const all = new Promise<void>(resolve => { resolveAll = resolve })
  const subscribers = await openMany(SUBSCRIBERS, () => open(() => { if (++received === expected) resolveAll() }))
  const url = `http://127.0.0.1:${port}/api/v1/rooms/bench/publish`
  const body = JSON.stringify({ data: { text: 'x'.repeat(64) } })
  const cpu0 = await cpuMs(pid)
  const t0 = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: INFLIGHT }, async () => {
    while (next++ < EVENTS) await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then(r => r.arrayBuffer())
  }))
  const sent = performance.now()
  await all
  const ms = performance.now() - t0
  const cpuUsed = await cpuMs(pid) - cpu0
  for (const s of subscribers) s.close()
  const row = {
    door,
    subscribers: SUBSCRIBERS,
    events: EVENTS,
    httpPublishesPerSec: Math.round(EVENTS / ((sent - t0) / 1000)),
    deliveriesPerSec: Math.round(expected / (ms / 1000)),
    serverCpuUsPerDelivery: Number((cpuUsed * 1000 / expected).toFixed(2))
  }
  console.log(JSON.stringify(row))
  return row
}

const server = await startServer()
try {
  const ws = await measure('ws', server.port, server.pid, on => wsSubscriber(server.port, on))
  const sse = await measure('sse', server.port, server.pid, on => streamSubscriber(server.port, '/sse', on))
  const stream = await measure('stream', server.port, server.pid, on => streamSubscriber(server.port, '/stream', on))
  console.log(JSON.stringify({
    cpuPerDeliveryRatio: {
      sse: Number((sse.serverCpuUsPerDelivery / ws.serverCpuUsPerDelivery).toFixed(2)),
      stream: Number((stream.serverCpuUsPerDelivery / ws.serverCpuUsPerDelivery).toFixed(2))
    }
  }))
} finally {
  server.stop()
}
