/**
 * Request overhead of HTTP metrics and tracing, measured with autocannon in one run:
 *   npm run build && node dist/bench/observability-overhead.js [--duration 5] [--connections 10] [--rounds 3]
 * Each mode runs as its own server process (autocannon in this one):
 *   bare     no HTTP duration histogram, no tracing
 *   metrics  the HTTP duration histogram (as shipped, tracing off)
 *   traced   metrics + tracing, spans batched to an exporter that drops them
 * on GET /api/status and on POST /api/send (to an offline client: one store commit each).
 * Modes alternate round by round so machine noise spreads over all of them; medians are reported.
 * Besides req/s (sensitive to whatever else runs on the machine), the server's own CPU time
 * per request is reported: on a shared machine it is the steadier measure of overhead.
 */
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import app from '../app.js'
import { loadConfig } from '../plugins/core/config.js'

type Mode = 'bare' | 'metrics' | 'traced'
const MODES: Mode[] = ['bare', 'metrics', 'traced']

const { values } = parseArgs({
  options: {
    serve: { type: 'string' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' }
  }
})

/** Spans are built, batched and handed over, then dropped: the cost of tracing without a collector's. */
const discard: SpanExporter = {
  export: (_spans, done) => done({ code: 0 }),
  shutdown: async () => {}
}

async function serve (mode: Mode): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-overhead-'))
  const config = loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'error', RATE_LIMIT_MAX: '1000000000', INBOX_MAX: '10' })
  const server = Fastify({ logger: { level: 'error' } })
  if (mode === 'bare') {
    // the metrics plugin skips routes configured with metrics: false
    server.addHook('onRoute', route => { route.config = { ...route.config, metrics: false } })
  }
  const tracerProvider = mode === 'traced' ? new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(discard)] }) : undefined
  await server.register(fp(app), { config, tracing: { tracerProvider } })
  await server.listen({ port: 0, host: '127.0.0.1' })
  const address = server.server.address()
  process.stdout.write(`listening on ${typeof address === 'object' && address ? address.port : 0}\n`)
  process.on('message', () => { process.send?.(process.cpuUsage()) })
  process.on('SIGTERM', () => {
    server.close().finally(() => {
      rmSync(dataDir, { recursive: true, force: true })
      process.exit(0)
    })
  })
}

interface Server { port: number, cpuMicros: () => Promise<number>, stop: () => Promise<void> }

async function startServer (mode: Mode): Promise<Server> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', mode], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
  const port = await new Promise<number>((resolve, reject) => {
    let text = ''
    child.stdout?.on('data', chunk => {
      text += chunk
      const found = /listening on (\d+)/.exec(text)
      if (found) resolve(Number(found[1]))
    })
    child.once('exit', code => reject(new Error(`server ${mode} exited with ${code}`)))
  })
  return {
    port,
    cpuMicros: () => new Promise(resolve => {
      child.once('message', usage => resolve((usage as NodeJS.CpuUsage).user + (usage as NodeJS.CpuUsage).system))
      child.send('cpu')
    }),
    stop: () => new Promise(resolve => {
      child.once('exit', () => resolve())
      child.kill('SIGTERM')
    })
  }
}

interface Target { name: string, method: string, path: string, body?: string }
const TARGETS: Target[] = [
  { name: 'GET /api/status', method: 'GET', path: '/api/status' },
  { name: 'POST /api/send', method: 'POST', path: '/api/send', body: JSON.stringify({ from: 'bench', to: 'offline', text: 'hello' }) }
]

interface Sample { rps: number, p50: number, p99: number, total: number }

async function cannon (port: number, target: Target, seconds = values.duration as string): Promise<Sample> {
  const bin = fileURLToPath(new URL('../../node_modules/autocannon/autocannon.js', import.meta.url))
  const args = [bin, '-j', '-c', values.connections as string, '-d', seconds, '-m', target.method]
  if (target.body) args.push('-H', 'content-type=application/json', '-b', target.body)
  args.push(`http://127.0.0.1:${port}${target.path}`)
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    let text = ''
    child.stdout.on('data', chunk => { text += chunk })
    child.once('exit', code => code === 0 ? resolve(text) : reject(new Error(`autocannon exited with ${code}`)))
  })
  const result = JSON.parse(out) as { requests: { average: number, total: number }, latency: { p50: number, p99: number }, non2xx: number }
  if (result.non2xx > 0) throw new Error(`${target.name}: ${result.non2xx} responses were not 2xx`)
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, total: result.requests.total }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main (): Promise<void> {
  const rounds = Number(values.rounds)
  const samples = new Map<string, Array<Sample & { cpuPerRequest: number }>>()
  for (let round = 0; round < rounds; round++) {
    for (const mode of round % 2 === 0 ? MODES : [...MODES].reverse()) {
      const server = await startServer(mode)
      try {
        for (const target of TARGETS) {
          await cannon(server.port, target, '1') // warm-up: JIT, SQLite page cache
          const cpuBefore = await server.cpuMicros()
          const r = await cannon(server.port, target)
          const cpuPerRequest = (await server.cpuMicros() - cpuBefore) / r.total
          const key = `${target.name}|${mode}`
          samples.set(key, [...(samples.get(key) ?? []), { ...r, cpuPerRequest }])
          process.stderr.write(`round ${round + 1} ${mode.padEnd(7)} ${target.name.padEnd(16)} ${r.rps.toFixed(0)} req/s p50 ${r.p50} ms p99 ${r.p99} ms ${cpuPerRequest.toFixed(0)} µs CPU/request\n`)
        }
      } finally {
        await server.stop()
      }
    }
  }
  console.log(`\n${values.connections} connections, ${values.duration} s per sample, median of ${rounds} rounds`)
  console.log('| endpoint | mode | req/s | p50 ms | p99 ms | req/s vs bare | server CPU µs/request | CPU vs bare |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const target of TARGETS) {
    const bare = samples.get(`${target.name}|bare`) ?? []
    const bareRps = median(bare.map(s => s.rps))
    const bareCpu = median(bare.map(s => s.cpuPerRequest))
    for (const mode of MODES) {
      const list = samples.get(`${target.name}|${mode}`) ?? []
      const rps = median(list.map(s => s.rps))
      const cpu = median(list.map(s => s.cpuPerRequest))
      console.log(`| ${target.name} | ${mode} | ${rps.toFixed(0)} | ${median(list.map(s => s.p50))} | ${median(list.map(s => s.p99))} | ${(rps / bareRps).toFixed(2)} | ${cpu.toFixed(0)} | ${(cpu / bareCpu).toFixed(2)} |`)
    }
  }
}

if (values.serve) await serve(values.serve as Mode)
else await main()
