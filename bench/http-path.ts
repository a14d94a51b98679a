/**
 * S6's path without the network: POST /api/send to a connected client through
 * `inject` (Fastify's light-my-request), so only the server's own per-request
 * work is timed, the same on a busy machine as on a quiet one. Prints CPU µs
 * per request for Switchboard (every guard as server.ts configures them, plus
 * AUTH_SECRET with a bearer token when BENCH_AUTH=1) and for bare Fastify.
 *   node dist/bench/http-path.js [requests]
 * Profile it with node --cpu-prof to see where a request's time goes;
 * BENCH_APP_DIST=<other checkout>/dist measures another build's app.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHmac } from 'node:crypto'
import { createRequire } from 'node:module'
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'

// BENCH_APP_DIST=/other/checkout/dist: measure that build's app instead (before/after a change)
const dist = process.env.BENCH_APP_DIST ?? new URL('..', import.meta.url).pathname
const { default: app, serverOptions } = await import(join(dist, 'app.js')) as typeof import('../app.js')
const { loadConfig } = await import(join(dist, 'plugins/core/config.js')) as typeof import('../plugins/core/config.js')
// that build's own Fastify (its plugins check the instance they are given)
const { default: Fastify } = await import(createRequire(join(dist, 'app.js')).resolve('fastify')) as typeof import('fastify')

const requests = Number(process.argv[2] ?? 20000)
const dataDir = mkdtempSync(join(tmpdir(), 'sb-http-path-'))
const secret = process.env.BENCH_AUTH === '1' ? 'bench-secret-bench-secret-bench-secret' : undefined

function token (sub: string): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`
  return `${body}.${createHmac('sha256', secret ?? '').update(body).digest('base64url')}`
}

async function measure (server: FastifyInstance, headers: Record<string, string>): Promise<number> {
  const payload = JSON.stringify({ from: 'bench', to: 'target0', text: 'hello from the http-path bench' })
  const one = () => server.inject({ method: 'POST', url: '/api/send', headers: { 'content-type': 'application/json', ...headers }, payload })
  for (let i = 0; i < 2000; i++) {
    const res = await one()
    if (res.statusCode !== 200) throw new Error(`${res.statusCode} ${res.body}`)
  }
  const before = process.cpuUsage()
  // 10 in flight, as autocannon's 10 connections
  let next = 0
  await Promise.all(Array.from({ length: 10 }, async () => { while (next++ < requests) await one() }))
  const used = process.cpuUsage(before)
  return (used.user + used.system) / requests
}

const config = loadConfig({ ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', DATA_DIR: dataDir, RATE_LIMIT_MAX: '100000000', ...(secret ? { AUTH_SECRET: secret } : {}) })
const sb = Fastify(serverOptions(config))
await sb.register(app, { config })
await sb.listen({ port: 0, host: '127.0.0.1' })
const address = sb.server.address()
const port = typeof address === 'object' && address ? address.port : 0
const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?clientId=target0${secret ? `&token=${token('target0')}` : ''}`)
let frames = 0
ws.on('message', () => { frames++ })
await new Promise(resolve => ws.once('message', resolve))

const bare = Fastify({ logger: false })
bare.post('/api/send', async () => ({ hello: 'world' }))
await bare.ready()

const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
for (let r = 0; r < rounds; r++) {
  const a = await measure(sb, secret ? { authorization: `Bearer ${token('bench')}` } : {})
  // BENCH_BARE=0: Switchboard only (for a profile of its path alone)
  const b = process.env.BENCH_BARE === '0' ? NaN : await measure(bare, {})
  console.log(`round ${r + 1}: switchboard ${a.toFixed(1)} µs/request, bare Fastify ${b.toFixed(1)} µs/request, ratio ${(b / a).toFixed(2)}`)
}
console.log(`frames delivered to the connected client: ${frames}`)
ws.close()
await sb.close()
await bare.close()
rmSync(dataDir, { recursive: true, force: true })
