/**
 * Redis commands per cross-instance publish, counted by redis-server itself
 * (INFO commandstats): deterministic, so it measures the S8 path on any
 * machine. Two instances and a private redis-server on a free port; the
 * subscribers of each room are on instance A, its publisher on instance B.
 *   node dist/bench/redis-ops.js [publishes] [rooms] [subscribers per room]
 * BENCH_APP_DIST=<other checkout>/dist counts another build.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'

const publishes = Number(process.argv[2] ?? 2000)
const rooms = Number(process.argv[3] ?? 10)
const perRoom = Number(process.argv[4] ?? 50)
/** Publishes per 1 ms tick (BENCH_PER_TICK, 10: the S8 pace). */
const perTick = Number(process.env.BENCH_PER_TICK ?? 10)
const dist = process.env.BENCH_APP_DIST ?? new URL('..', import.meta.url).pathname
const { default: app, serverOptions } = await import(join(dist, 'app.js')) as typeof import('../app.js')
const { loadConfig } = await import(join(dist, 'plugins/core/config.js')) as typeof import('../plugins/core/config.js')
const req = createRequire(join(dist, 'app.js'))
const { default: Fastify } = await import(req.resolve('fastify')) as typeof import('fastify')
const { Redis } = await import(req.resolve('ioredis')) as typeof import('ioredis')

const port = await new Promise<number>(resolve => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = (s.address() as { port: number }).port
    s.close(() => resolve(p))
  })
})
const redis = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
const admin = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => 50 })
for (let i = 0; i < 50; i++) {
  try { await admin.connect(); break } catch { await new Promise(resolve => setTimeout(resolve, 100)) }
}

async function instance () {
  const dataDir = mkdtempSync(join(tmpdir(), 'sb-redis-ops-'))
  const config = loadConfig({ ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', DATA_DIR: dataDir, REDIS_URL: `redis://127.0.0.1:${port}`, RATE_LIMIT_MAX: '100000000', WS_MESSAGES_PER_SECOND: '1000000', MAX_CONNECTIONS_PER_CLIENT: '30000', MAX_CONNECTIONS: '30000', MAX_PENDING_CONNECTIONS_PER_CLIENT: '30000', MAX_PENDING_CONNECTIONS: '30000' })
  const server = Fastify(serverOptions(config))
  await server.register(app, { config })
  await server.listen({ port: 0, host: '127.0.0.1' })
  return { server, port: (server.server.address() as { port: number }).port, dataDir }
}

let received = 0
const latencies: number[] = []
async function client (p: number, id: string, room: string): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${p}/ws?clientId=${id}`)
  await new Promise(resolve => ws.once('message', resolve))
  const joined = new Promise<void>(resolve => {
    ws.on('message', (data: Buffer) => {
      const text = data.toString()
      if (text.startsWith('{"type":"joined"')) resolve()
      else if (text.startsWith('{"type":"room_message"')) {
        received++
        const sent = /"data":"m\d+@([\d.]+)"/.exec(text)
        if (sent && id.startsWith('sub')) latencies.push(performance.now() - Number(sent[1]))
      }
    })
  })
  ws.send(JSON.stringify({ type: 'join', room, id: 1 }))
  await joined
  return ws
}

const a = await instance()
const b = await instance()
const sockets: WebSocket[] = []
for (let r = 0; r < rooms; r++) {
  for (let i = 0; i < perRoom; i++) sockets.push(await client(a.port, `sub${r}-${i}`, `room${r}`))
}
const publishers: WebSocket[] = []
for (let r = 0; r < rooms; r++) publishers.push(await client(b.port, `pub${r}`, `room${r}`))
await new Promise(resolve => setTimeout(resolve, 300))

await admin.config('RESETSTAT')
const expected = publishes * (perRoom + 1)
const started = Date.now()
// perTick publishes per millisecond tick at most, as S8's open loop sends them
for (let i = 0; i < publishes; i++) {
  publishers[i % rooms].send(JSON.stringify({ type: 'publish', room: `room${i % rooms}`, data: `m${i}@${performance.now().toFixed(3)}` }))
  if (i % perTick === perTick - 1) await new Promise(resolve => setTimeout(resolve, 1))
}
const done = () => received >= expected || Date.now() - started >= 20000
while (!done()) await new Promise(resolve => setTimeout(resolve, 50))
const stats = await admin.info('commandstats')
const calls: Record<string, number> = {}
let total = 0
for (const m of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
  if (m[1] === 'config' || m[1] === 'info') continue
  calls[m[1]] = Number(m[2])
  total += Number(m[2])
}
latencies.sort((x, y) => x - y)
const pct = (q: number) => +(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0).toFixed(2)
// both instances share this process's event loop: the latency is the path's, not a cluster's on separate cores
console.log(JSON.stringify({ publishes, rooms, perRoom, delivered: received, expected, redisCommands: total, perPublish: +(total / publishes).toFixed(2), latencyMs: { p50: pct(0.5), p99: pct(0.99) }, calls }))
for (const ws of [...sockets, ...publishers]) ws.terminate()
await a.server.close()
await b.server.close()
await admin.quit()
redis.kill()
rmSync(a.dataDir, { recursive: true, force: true })
rmSync(b.dataDir, { recursive: true, force: true })
