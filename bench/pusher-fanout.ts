/**
 * The Pusher protocol next to the native one, in the same run and process:
 *   npm run bench:pusher [-- --subscribers 1000 --events 200]
 * One server child process (dist/server.js) with a Pusher app. Phase "pusher":
 * --subscribers protocol-7 connections subscribe to one channel; --events
 * events are triggered through the signed HTTP API (the real `pusher` SDK),
 * --inflight at a time. Phase "native": as many /ws connections join one room;
 * as many events go through POST /api/v1/rooms/:room/publish. For each: HTTP
 * events/s, deliveries/s, and server CPU time per delivery (/proc schedstat).
 */
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'
import { cpuMs } from './cpu.js'
import WebSocket from 'ws'
import { startBenchServer, type BenchServer } from './server-process.js'
import type PusherServer from 'pusher'

const require = createRequire(import.meta.url)
const Sdk = require('pusher') as typeof PusherServer

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
const APP = { appId: 'bench', key: 'bench-key', secret: 'bench-secret' }

async function startServer (): Promise<BenchServer> {
  return await startBenchServer('pusher', { PUSHER_APPS_FILE: '', PUSHER_APP_ID: APP.appId, PUSHER_APP_KEY: APP.key, PUSHER_APP_SECRET: APP.secret })
}

function open (url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

/** Opens `n` sockets 100 at a time; `ready(ws)` resolves once each is subscribed/joined. */
async function openMany (n: number, url: string, ready: (ws: WebSocket) => Promise<void>): Promise<WebSocket[]> {
  const all: WebSocket[] = []
  for (let i = 0; i < n; i += 100) {
    const batch = await Promise.all(Array.from({ length: Math.min(100, n - i) }, async () => {
      const ws = await open(url)
      await ready(ws)
      return ws
    }))
    all.push(...batch)
  }
  return all
}

function waitFrame (ws: WebSocket, match: (m: any) => boolean): Promise<void> {
  return new Promise(resolve => {
    const on = (data: WebSocket.RawData) => {
      if (match(JSON.parse(data.toString()))) {
        ws.off('message', on)
        resolve()
      }
    }
    ws.on('message', on)
  })
}

async function measure (name: string, pid: number, sockets: WebSocket[], isEvent: (m: any) => boolean, send: (i: number) => Promise<unknown>) {
  const expected = sockets.length * EVENTS
  let received = 0
  let resolveAll: () => void = () => {}
  const all = new Promise<void>(resolve => { resolveAll = resolve })
  for (const ws of sockets) {
    ws.on('message', data => {
      if (isEvent(JSON.parse(data.toString())) && ++received === expected) resolveAll()
    })
  }
  const cpu0 = await cpuMs(pid)
  const t0 = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: INFLIGHT }, async () => {
    while (next < EVENTS) await send(next++)
  }))
  const sent = performance.now()
  await all
  const ms = performance.now() - t0
  const cpuUsed = await cpuMs(pid) - cpu0
  const row = {
    protocol: name,
    subscribers: sockets.length,
    events: EVENTS,
    httpEventsPerSec: Math.round(EVENTS / ((sent - t0) / 1000)),
    deliveriesPerSec: Math.round(expected / (ms / 1000)),
    serverCpuUsPerDelivery: Number((cpuUsed * 1000 / expected).toFixed(2))
  }
  console.log(JSON.stringify(row))
  return row
}

const server = await startServer()
try {
  const sdk = new Sdk({ ...APP, host: '127.0.0.1', port: String(server.port), useTLS: false })
  const pusherSockets = await openMany(SUBSCRIBERS, `ws://127.0.0.1:${server.port}/app/${APP.key}?protocol=7`, async ws => {
    // connection_established may already have arrived with the upgrade: the subscription is what counts
    const ok = waitFrame(ws, m => m.event === 'pusher_internal:subscription_succeeded')
    ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'bench' } }))
    await ok
  })
  const payload = JSON.stringify({ text: 'x'.repeat(64) })
  await measure('pusher', server.pid, pusherSockets, m => m.event === 'tick', () => sdk.trigger('bench', 'tick', payload))
  for (const ws of pusherSockets) ws.terminate()

  let n = 0
  const nativeSockets = await openMany(SUBSCRIBERS, `ws://127.0.0.1:${server.port}/ws`, async ws => {
    // frames sent before the welcome are handled once the connection is registered
    const ok = waitFrame(ws, m => m.type === 'joined')
    ws.send(JSON.stringify({ type: 'join', room: 'bench', requestId: `j${n++}` }))
    await ok
  })
  const url = `http://127.0.0.1:${server.port}/api/v1/rooms/bench/publish`
  await measure('native', server.pid, nativeSockets, m => m.type === 'room_message' && m.room === 'bench', () => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ data: { text: 'x'.repeat(64) } }) }).then(r => r.arrayBuffer()))
  for (const ws of nativeSockets) ws.terminate()
} finally {
  server.stop()
}
