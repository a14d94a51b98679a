/**
 * Cross-instance delivery versus delivery on one instance, in the same run:
 *   npm run build && node dist/bench/cluster-delivery.js [-- --messages 2000 --pings 300 --inflight 32]
 * Two app instances (A, B) on one private redis-server (AOF on, appendfsync everysec
 * unless --fsync always). A sender on A; one receiver on A ("same instance") and one on B
 * ("cross instance"), measured one after the other:
 *   - latency: a direct message, then a room message, sent one at a time; time from send on A
 *     to arrival at the receiver (median and p99);
 *   - rate: direct messages sent with --inflight awaiting their ack; messages received per second.
 * Prints the ratios cross / same. Needs redis-server on PATH.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import app from '../app.js'
import { loadConfig } from '../plugins/core/config.js'

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '2000' },
    pings: { type: 'string', default: '300' },
    inflight: { type: 'string', default: '32' },
    fsync: { type: 'string', default: 'everysec' }
  }
})
const MESSAGES = Number(values.messages)
const PINGS = Number(values.pings)
const INFLIGHT = Number(values.inflight)

async function freePort (): Promise<number> {
  return new Promise(resolve => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() => resolve(typeof address === 'object' && address ? address.port : 0))
    })
  })
}

async function startRedis (): Promise<{ url: string, stop: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-bench-redis-'))
  const port = await freePort()
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', String(values.fsync)], { stdio: 'ignore' })
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>(resolve => {
      const s = createConnection({ port, host: '127.0.0.1' }, () => { s.end(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (ok) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return { url: `redis://127.0.0.1:${port}`, stop: () => { proc.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }) } }
}

async function instance (redisUrl: string): Promise<{ server: FastifyInstance, wsUrl: string }> {
  const config = loadConfig({ REDIS_URL: redisUrl, LOG_LEVEL: 'warn', WS_MESSAGES_PER_SECOND: '1000000', MAX_CONNECTIONS_PER_CLIENT: '1000', RATE_LIMIT_MAX: '1000000' })
  const server = Fastify({ logger: { level: 'warn' } })
  await server.register(fp(app), { config })
  await server.listen({ port: 0, host: '127.0.0.1' })
  const address = server.server.address()
  return { server, wsUrl: `ws://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/ws` }
}

class Client {
  readonly ws: WebSocket
  private listeners: Array<(m: Record<string, any>) => void> = []
  private nextId = 1
  private replies = new Map<string, (m: Record<string, any>) => void>()

  constructor (url: string) {
    this.ws = new WebSocket(url)
    this.ws.on('message', data => {
      const m = JSON.parse(data.toString())
      if (m.id !== undefined) this.replies.get(m.id)?.(m)
      for (const fn of this.listeners) fn(m)
    })
  }

  static async open (wsUrl: string, clientId: string): Promise<Client> {
    const c = new Client(`${wsUrl}?clientId=${clientId}`)
    // the welcome can arrive in the same turn as the open event: listen first
    await c.next(m => m.type === 'welcome')
    return c
  }

  on (fn: (m: Record<string, any>) => void): void { this.listeners.push(fn) }

  next (match: (m: Record<string, any>) => boolean): Promise<Record<string, any>> {
    return new Promise(resolve => {
      const fn = (m: Record<string, any>) => {
        if (!match(m)) return
        this.listeners = this.listeners.filter(l => l !== fn)
        resolve(m)
      }
      this.listeners.push(fn)
    })
  }

  request (msg: Record<string, unknown>): Promise<Record<string, any>> {
    const id = `q${this.nextId++}`
    return new Promise(resolve => {
      this.replies.set(id, m => { this.replies.delete(id); resolve(m) })
      this.ws.send(JSON.stringify({ ...msg, id }))
    })
  }
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]

async function latencies (sender: Client, receiver: Client, kind: 'message' | 'room_message', to: string, room: string): Promise<{ median: number, p99: number }> {
  const samples: number[] = []
  for (let i = 0; i < PINGS; i++) {
    const marker = `${kind}-${to}-${i}`
    const arrived = receiver.next(m => m.type === kind && (m.text === marker || m.data === marker))
    const started = process.hrtime.bigint()
    if (kind === 'message') sender.ws.send(JSON.stringify({ type: 'send', to, text: marker }))
    else sender.ws.send(JSON.stringify({ type: 'publish', room, data: marker }))
    await arrived
    samples.push(Number(process.hrtime.bigint() - started) / 1e6)
  }
  samples.sort((a, b) => a - b)
  return { median: percentile(samples, 0.5), p99: percentile(samples, 0.99) }
}

async function rate (sender: Client, receiver: Client, to: string): Promise<number> {
  let received = 0
  let done: () => void = () => {}
  const all = new Promise<void>(resolve => { done = resolve })
  receiver.on(m => { if (m.type === 'message' && m.from === 'sender' && m.text.startsWith('rate-') && ++received === MESSAGES) done() })
  const started = process.hrtime.bigint()
  let sent = 0
  await Promise.all(Array.from({ length: INFLIGHT }, async () => {
    while (sent < MESSAGES) {
      sent++
      await sender.request({ type: 'send', to, text: `rate-${sent}` })
    }
  }))
  await all
  return MESSAGES / (Number(process.hrtime.bigint() - started) / 1e9)
}

const redis = await startRedis()
const a = await instance(redis.url)
const b = await instance(redis.url)
try {
  const sender = await Client.open(a.wsUrl, 'sender')
  const local = await Client.open(a.wsUrl, 'local')
  const remote = await Client.open(b.wsUrl, 'remote')
  await sender.request({ type: 'join', room: 'same' })
  await local.request({ type: 'join', room: 'same' })
  await sender.request({ type: 'join', room: 'cross' })
  await remote.request({ type: 'join', room: 'cross' })
  // warm-up: scripts loaded, JIT warm
  await latencies(sender, local, 'message', 'local', 'same')
  await latencies(sender, remote, 'message', 'remote', 'cross')

  const dmSame = await latencies(sender, local, 'message', 'local', 'same')
  const dmCross = await latencies(sender, remote, 'message', 'remote', 'cross')
  const roomSame = await latencies(sender, local, 'room_message', 'local', 'same')
  const roomCross = await latencies(sender, remote, 'room_message', 'remote', 'cross')
  const rateSame = await rate(sender, local, 'local')
  const rateCross = await rate(sender, remote, 'remote')

  const ms = (x: number) => `${x.toFixed(3)} ms`
  console.log(JSON.stringify({
    setup: { messages: MESSAGES, pings: PINGS, inflight: INFLIGHT, appendfsync: values.fsync, node: process.version },
    directMessageLatency: { same: { median: ms(dmSame.median), p99: ms(dmSame.p99) }, cross: { median: ms(dmCross.median), p99: ms(dmCross.p99) }, medianRatio: +(dmCross.median / dmSame.median).toFixed(2), addedMedian: ms(dmCross.median - dmSame.median) },
    roomMessageLatency: { same: { median: ms(roomSame.median), p99: ms(roomSame.p99) }, cross: { median: ms(roomCross.median), p99: ms(roomCross.p99) }, medianRatio: +(roomCross.median / roomSame.median).toFixed(2), addedMedian: ms(roomCross.median - roomSame.median) },
    directMessageRate: { samePerSecond: Math.round(rateSame), crossPerSecond: Math.round(rateCross), ratio: +(rateCross / rateSame).toFixed(2) }
  }, null, 2))
  for (const c of [sender, local, remote]) c.ws.close()
} finally {
  await a.server.close()
  await b.server.close()
  redis.stop()
}
