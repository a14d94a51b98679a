/**
 * Latency the backend hooks (PROXY_JOIN_URL, PROXY_PUBLISH_URL) add to a join
 * and a publish, measured in one run against the same server without hooks:
 *   npm run bench:proxy   (npm run build && node dist/bench/proxy-hooks.js [--requests 2000] [--rounds 3])
 * Three processes: the server (`--serve hooks` or `--serve bare`), a local
 * node:http backend (`--backend`) that verifies nothing and allows every
 * request (the cost measured is ours: signing, the POST, the answer's
 * validation), and this one, a `ws` client that sends one request at a time
 * (join a fresh room, then publish to it) and times each reply. Modes
 * alternate round by round so machine noise spreads over both; p50/p99 are
 * over all the rounds' samples.
 */
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import http from 'node:http'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import app from '../app.js'
import { loadConfig } from '../plugins/core/config.js'

type Mode = 'bare' | 'hooks'
const MODES: Mode[] = ['bare', 'hooks']

const { values } = parseArgs({
  options: {
    serve: { type: 'string' },
    backend: { type: 'boolean', default: false },
    'backend-url': { type: 'string' },
    requests: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' }
  }
})

const SECRET = `whsec_${randomBytes(32).toString('base64')}`

/** The application backend: allows every hook; the publish hook gives `data` back as it came (a rewrite to the same value). */
async function backend (): Promise<void> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { hook: string, data?: unknown }
      const answer = body.hook === 'publish' ? { allow: true, data: body.data } : { allow: true }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer))
    })
  })
  server.keepAliveTimeout = 60000
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  process.stdout.write(`listening on ${typeof address === 'object' && address ? address.port : 0}\n`)
  process.on('SIGTERM', () => server.close(() => process.exit(0)))
}

async function serve (mode: Mode): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-proxy-bench-'))
  const hooks = values['backend-url'] as string
  const config = loadConfig({
    DATA_DIR: dataDir,
    LOG_LEVEL: 'error',
    WS_MESSAGES_PER_SECOND: '1000000',
    MAX_ROOMS_PER_CONNECTION: '1000000',
    ...(mode === 'hooks' ? { PROXY_JOIN_URL: `${hooks}/join`, PROXY_PUBLISH_URL: `${hooks}/publish`, PROXY_SECRET: process.env.BENCH_PROXY_SECRET } : {})
  })
  const server = Fastify({ logger: { level: 'error' } })
  await server.register(fp(app), { config })
  await server.listen({ port: 0, host: '127.0.0.1' })
  const address = server.server.address()
  process.stdout.write(`listening on ${typeof address === 'object' && address ? address.port : 0}\n`)
  process.on('SIGTERM', () => {
    server.close().finally(() => {
      rmSync(dataDir, { recursive: true, force: true })
      process.exit(0)
    })
  })
}

interface Child { port: number, stop: () => Promise<void> }

async function start (args: string[]): Promise<Child> {
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(import.meta.url), ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, BENCH_PROXY_SECRET: SECRET } })
  const port = await new Promise<number>((resolve, reject) => {
    let text = ''
    child.stdout?.on('data', chunk => {
      text += chunk
      const found = /listening on (\d+)/.exec(text)
      if (found) resolve(Number(found[1]))
    })
    child.once('exit', code => reject(new Error(`${args.join(' ')} exited with ${code}`)))
  })
  return {
    port,
    stop: () => new Promise(resolve => {
      child.once('exit', () => resolve())
      child.kill('SIGTERM')
    })
  }
}

/** One connection sending one request at a time: each reply's round trip, in ms. */
async function measure (port: number, requests: number): Promise<{ join: number[], publish: number[] }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?clientId=bench`)
  const waiting = new Map<number, (m: { type: string }) => void>()
  await new Promise<void>((resolve, reject) => {
    ws.on('message', data => {
      const m = JSON.parse(data.toString()) as { type: string, id?: number }
      if (m.type === 'welcome') resolve()
      if (m.id !== undefined) waiting.get(m.id)?.(m)
    })
    ws.once('error', reject)
  })
  let next = 1
  const request = async (msg: Record<string, unknown>): Promise<number> => {
    const id = next++
    const started = performance.now()
    const reply = await new Promise<{ type: string }>(resolve => {
      waiting.set(id, resolve)
      ws.send(JSON.stringify({ ...msg, id }))
    })
    waiting.delete(id)
    if (reply.type === 'error') throw new Error(`${String(msg.type)} refused: ${JSON.stringify(reply)}`)
    return performance.now() - started
  }
  const out = { join: [] as number[], publish: [] as number[] }
  for (let i = 0; i < requests; i++) {
    const room = `bench-${randomBytes(6).toString('hex')}`
    out.join.push(await request({ type: 'join', room }))
    out.publish.push(await request({ type: 'publish', room, data: { n: i, text: 'hello' } }))
    // one room per join, left again: the connection's room count stays flat
    await request({ type: 'leave', room })
  }
  ws.close()
  return out
}

const quantile = (xs: number[], q: number) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}

async function main (): Promise<void> {
  const requests = Number(values.requests)
  const rounds = Number(values.rounds)
  const hookBackend = await start(['--backend'])
  const samples: Record<Mode, { join: number[], publish: number[] }> = { bare: { join: [], publish: [] }, hooks: { join: [], publish: [] } }
  try {
    for (let round = 0; round < rounds; round++) {
      for (const mode of round % 2 === 0 ? MODES : [...MODES].reverse()) {
        const server = await start(['--serve', mode, '--backend-url', `http://127.0.0.1:${hookBackend.port}`])
        try {
          await measure(server.port, Math.min(200, requests)) // warm-up: JIT, SQLite page cache, the backend's keep-alive connections
          const r = await measure(server.port, requests)
          samples[mode].join.push(...r.join)
          samples[mode].publish.push(...r.publish)
          process.stderr.write(`round ${round + 1} ${mode.padEnd(5)} join p50 ${quantile(r.join, 0.5).toFixed(3)} ms, publish p50 ${quantile(r.publish, 0.5).toFixed(3)} ms\n`)
        } finally {
          await server.stop()
        }
      }
    }
  } finally {
    await hookBackend.stop()
  }
  console.log(`\n${requests} joins and publishes per round, one at a time on one connection, ${rounds} rounds; backend on 127.0.0.1`)
  console.log('| request | without hooks p50 / p99 ms | with hooks p50 / p99 ms | added p50 / p99 ms |')
  console.log('|---|---|---|---|')
  for (const kind of ['join', 'publish'] as const) {
    const bare = samples.bare[kind]
    const hooked = samples.hooks[kind]
    const [b50, b99, h50, h99] = [quantile(bare, 0.5), quantile(bare, 0.99), quantile(hooked, 0.5), quantile(hooked, 0.99)]
    console.log(`| ${kind} | ${b50.toFixed(3)} / ${b99.toFixed(3)} | ${h50.toFixed(3)} / ${h99.toFixed(3)} | ${(h50 - b50).toFixed(3)} / ${(h99 - b99).toFixed(3)} |`)
  }
}

if (values.backend) await backend()
else if (values.serve) await serve(values.serve as Mode)
else await main()
