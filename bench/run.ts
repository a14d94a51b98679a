/**
 * Switchboard against a raw `ws` server and Socket.IO, scenario by scenario,
 * every server in a fresh process on core 0 and the load generator on core 1.
 *   npm run bench                 quick (a few minutes)
 *   npm run bench -- --full       the sizes
 *   node dist/bench/run.js --tiny --out DIR --no-docs   (the CI smoke test)
 *   --only S2,S5                  a subset
 *   --servers switchboard,raw-ws  only these servers
 *   --rates 500,1000 --step-ms 10000   other rate steps (e.g. a long steady step to profile)
 * Writes bench/results/<mode>-<date>.json (+ latest-<mode>.json), and in quick
 * and full mode the results section of docs/benchmarks.md and docs/benchmarks.svg.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, platform, release, tmpdir, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import pidusage from 'pidusage'
import type { Job, Protocol } from './generator.js'
import { renderChart, renderMarkdown, type BenchResults } from './report.js'
import type { ServerMemory } from './servers/control.js'

const here = dirname(fileURLToPath(import.meta.url))
const repoRoot = resolve(here, '..', '..')

const { values } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    tiny: { type: 'boolean', default: false },
    only: { type: 'string' },
    servers: { type: 'string' },
    rates: { type: 'string' },
    'step-ms': { type: 'string' },
    out: { type: 'string' },
    'no-docs': { type: 'boolean', default: false },
    baseline: { type: 'string' },
    render: { type: 'string' }
  }
})
const mode = values.tiny ? 'tiny' : values.full ? 'full' : 'quick'

/** Raised so the benchmark measures delivery, not the protective limits (see docs/benchmarks.md). */
const SWITCHBOARD_ENV = {
  HOST: '127.0.0.1',
  PORT: '0',
  LOG_LEVEL: 'warn',
  MAX_CONNECTIONS: '30000',
  MAX_CONNECTIONS_PER_CLIENT: '30000',
  WS_MESSAGES_PER_SECOND: '1000000',
  RATE_LIMIT_MAX: '100000000'
}

interface Variant { script: string, protocol: Protocol, env?: Record<string, string> }
const VARIANTS: Record<string, Variant> = {
  switchboard: { script: 'switchboard.js', protocol: 'switchboard', env: SWITCHBOARD_ENV },
  'switchboard-nohistory': { script: 'switchboard.js', protocol: 'switchboard', env: { ...SWITCHBOARD_ENV, ROOM_HISTORY_SIZE: '0', BENCH_PERSIST_MESSAGES: 'false' } },
  'raw-ws': { script: 'raw-ws.js', protocol: 'switchboard' },
  'socket.io': { script: 'socketio.js', protocol: 'socketio' },
  'fastify-hello': { script: 'fastify-hello.js', protocol: 'switchboard' }
}

type Params = Omit<Job, 'scenario' | 'protocol' | 'ports' | 'serverPids'>
const base = { payloadBytes: 128, maxP99Ms: 50, minDelivered: 0.9999, publishersPerRoom: 1 }
const sizes: Record<typeof mode, Record<string, Params>> = {
  tiny: {
    S1: { ...base, clients: 40, rooms: 4, rates: [], stepMs: 0 },
    S2: { ...base, clients: 40, rooms: 1, publishersPerRoom: 4, rates: [20], stepMs: 300 },
    S3: { ...base, clients: 40, rooms: 4, rates: [40], stepMs: 300 },
    S4: { ...base, clients: 40, rooms: 4, rates: [40], stepMs: 300 },
    S5: { ...base, clients: 40, rooms: 1, rates: [40], stepMs: 300 },
    S6: { ...base, clients: 1, rooms: 0, rates: [], stepMs: 0, http: { connections: 2, durationSec: 1, path: '/api/send' } },
    S7: { ...base, clients: 40, rooms: 1, publishersPerRoom: 4, rates: [20], stepMs: 300, slowConsumers: 2, slowMs: 500 }
  },
  quick: {
    S1: { ...base, clients: 2000, rooms: 20, rates: [], stepMs: 0 },
    // rates chosen for a 2-core machine: at 50 publishes/s into 1,000 members the generator's core saturates
    S2: { ...base, clients: 1000, rooms: 1, publishersPerRoom: 10, rates: [10, 20, 30, 40], stepMs: 1000 },
    S3: { ...base, clients: 1000, rooms: 100, rates: [250, 500, 1000, 1500, 2000], stepMs: 1000 },
    S4: { ...base, clients: 2000, rooms: 20, rates: [200], stepMs: 3000, maxP99Ms: Infinity },
    S5: { ...base, clients: 1000, rooms: 1, rates: [1000, 2000, 3000, 4000, 6000, 8000], stepMs: 1000 },
    S6: { ...base, clients: 1, rooms: 0, rates: [], stepMs: 0, http: { connections: 10, durationSec: 3, path: '/api/send' } },
    S7: { ...base, clients: 1000, rooms: 1, publishersPerRoom: 10, rates: [20], stepMs: 1500, slowConsumers: 10, slowMs: 5000 }
  },
  full: {
    S1: { ...base, clients: 10000, rooms: 100, rates: [], stepMs: 0 },
    S2: { ...base, clients: 1000, rooms: 1, publishersPerRoom: 10, rates: [10, 20, 30, 40, 50, 60, 80, 100], stepMs: 5000 },
    S3: { ...base, clients: 1000, rooms: 100, rates: [250, 500, 750, 1000, 1500, 2000, 3000, 4000], stepMs: 5000 },
    S4: { ...base, clients: 5000, rooms: 50, rates: [200], stepMs: 15000, maxP99Ms: Infinity },
    S5: { ...base, clients: 2000, rooms: 1, rates: [1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000], stepMs: 5000 },
    S6: { ...base, clients: 1, rooms: 0, rates: [], stepMs: 0, http: { connections: 10, durationSec: 10, path: '/api/send' } },
    S7: { ...base, clients: 1000, rooms: 1, publishersPerRoom: 10, rates: [20], stepMs: 5000, slowConsumers: 10, slowMs: 30000 }
  }
}

const SCENARIOS: Record<string, { title: string, servers: string[] }> = {
  S1: { title: 'idle memory', servers: ['switchboard', 'raw-ws', 'socket.io'] },
  S2: { title: 'big room fan-out', servers: ['switchboard', 'switchboard-nohistory', 'raw-ws', 'socket.io'] },
  S3: { title: 'small rooms', servers: ['switchboard', 'switchboard-nohistory', 'raw-ws', 'socket.io'] },
  S4: { title: 'latency', servers: ['switchboard', 'switchboard-nohistory', 'raw-ws', 'socket.io'] },
  S5: { title: 'direct messages', servers: ['switchboard', 'raw-ws', 'socket.io'] },
  S6: { title: 'HTTP send', servers: ['switchboard', 'fastify-hello'] },
  S7: { title: 'slow consumers', servers: ['switchboard', 'raw-ws', 'socket.io'] }
}

// --baseline DIR: also run the Switchboard built in another checkout's dist/ (before/after a change, same run)
if (values.baseline) {
  VARIANTS['switchboard-baseline'] = { script: resolve(values.baseline, 'bench', 'servers', 'switchboard.js'), protocol: 'switchboard', env: SWITCHBOARD_ENV }
  for (const sc of Object.values(SCENARIOS)) if (sc.servers.includes('switchboard')) sc.servers.splice(1, 0, 'switchboard-baseline')
}

const coreCount = cpus().length
const pinning = coreCount >= 2 && hasTaskset()

function hasTaskset (): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** Pins every thread of a process to one core, so server and generator do not share one. */
function pin (pid: number, core: number): void {
  if (!pinning) return
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' })
  } catch {}
}

function waitFor<T> (child: ChildProcess, type: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no ${type} from ${child.pid} within ${timeoutMs} ms`)) }, timeoutMs)
    const onMessage = (m: { type: string, error?: string }) => {
      if (m.type === 'failed') { cleanup(); reject(new Error(m.error)) }
      if (m.type === type) { cleanup(); resolve(m as T) }
    }
    const onExit = (code: number | null) => { cleanup(); reject(new Error(`process ${child.pid} exited with ${code} before ${type}`)) }
    const cleanup = () => { clearTimeout(timer); child.off('message', onMessage); child.off('exit', onExit) }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  if (child.connected) child.disconnect()
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(timer)
}

interface Started { child: ChildProcess, port: number, dataDir: string }

async function startServer (name: string, extraEnv: Record<string, string> = {}): Promise<Started> {
  const variant = VARIANTS[name]
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const child = fork(resolve(here, 'servers', variant.script), [], {
    // BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles every server process
    execArgv: ['--expose-gc', ...(process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [])],
    env: { ...process.env, DATA_DIR: dataDir, ...variant.env, ...extraEnv },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  pin(child.pid as number, 0)
  const { port } = await waitFor<{ port: number }>(child, 'ready', 20000)
  return { child, port, dataDir }
}

async function weigh (child: ChildProcess): Promise<ServerMemory & { rssOutside: number }> {
  const reply = waitFor<{ memory: ServerMemory }>(child, 'memory', 10000)
  child.send({ type: 'gc' })
  const { memory } = await reply
  const outside = await pidusage(child.pid as number)
  return { ...memory, rssOutside: outside.memory }
}

async function runOne (scenario: string, name: string): Promise<Record<string, unknown>> {
  const variant = VARIANTS[name]
  const params = sizes[mode][scenario]
  const generator = fork(join(here, 'generator.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  pin(generator.pid as number, pinning ? 1 : 0)
  const [server] = await Promise.all([startServer(name), waitFor(generator, 'ready', 20000)])
  try {
    // the bare Fastify yardstick has no WebSocket client to deliver to
    const clients = name === 'fastify-hello' ? 0 : params.clients
    const job: Job = { ...params, clients, scenario: scenario as Job['scenario'], protocol: variant.protocol, ports: [server.port], serverPids: [server.child.pid as number] }
    const timeoutMs = 120000 + (params.rates.length * (params.stepMs + 3000)) + (params.slowMs ?? 0) + (params.http?.durationSec ?? 0) * 1000
    if (scenario === 'S1') {
      await new Promise(resolve => setTimeout(resolve, 500))
      const empty = await weigh(server.child)
      const holding = waitFor(generator, 'holding', timeoutMs)
      generator.send({ type: 'job', job })
      await holding
      await new Promise(resolve => setTimeout(resolve, 1000))
      const loaded = await weigh(server.child)
      const result = waitFor<{ result: Record<string, unknown> }>(generator, 'result', 60000)
      generator.send({ type: 'release' })
      const idle = (await result).result
      const n = idle.connections as number
      return {
        ...idle,
        empty,
        loaded,
        rssBytesPerConnection: (loaded.rssOutside - empty.rssOutside) / n,
        heapBytesPerConnection: (loaded.heapUsed - empty.heapUsed) / n,
        externalBytesPerConnection: (loaded.external - empty.external) / n
      }
    }
    const result = waitFor<{ result: Record<string, unknown> }>(generator, 'result', timeoutMs)
    generator.send({ type: 'job', job })
    return (await result).result
  } finally {
    await stop(generator)
    await stop(server.child)
    rmSync(server.dataDir, { recursive: true, force: true })
  }
}

/** S8 needs Switchboard's REDIS_URL support and a redis-server binary; it reports why it did not run otherwise. */
function crossInstanceStatus (): { ran: false, reason: string } {
  const app = readFileSync(join(repoRoot, 'app.ts'), 'utf8')
  if (!/REDIS_URL|redis/i.test(app.replace(/statusReport\.section\('redis'[^\n]*\n/, ''))) {
    return { ran: false, reason: 'Switchboard has no REDIS_URL support on this branch yet (app.ts registers no Redis plugin)' }
  }
  return { ran: false, reason: 'S8 runs with --only S8 once the Redis plugin is merged; see bench/cross-instance.ts' }
}

/** Rewrites the results section of docs/benchmarks.md (between its markers) and docs/benchmarks.svg. */
function writeDocs (res: BenchResults): void {
  const doc = join(repoRoot, 'docs', 'benchmarks.md')
  const start = '<!-- bench:results:start -->'
  const end = '<!-- bench:results:end -->'
  let text: string
  try {
    text = readFileSync(doc, 'utf8')
  } catch {
    text = `# Benchmarks\n\n${start}\n${end}\n`
  }
  const section = `${start}\n${renderMarkdown(res)}\n${end}`
  text = text.includes(start) ? text.replace(new RegExp(`${start}[\\s\\S]*${end}`), () => section) : `${text}\n${section}\n`
  writeFileSync(doc, text)
  writeFileSync(join(repoRoot, 'docs', 'benchmarks.svg'), renderChart(res))
}

// --render FILE: rewrite the docs from a saved results file, without running anything
if (values.render) {
  writeDocs(JSON.parse(readFileSync(values.render, 'utf8')) as BenchResults)
  process.exit(0)
}

const only = values.only?.split(',').map(s => s.trim().toUpperCase())
// --servers switchboard,raw-ws: only these servers (profiling one, comparing two)
const onlyServers = values.servers?.split(',').map(s => s.trim())
const results: BenchResults = {
  mode,
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: coreCount, memoryGB: Math.round(totalmem() / 1073741824), os: `${platform()} ${release()}`, node: process.version, pinned: pinning },
  params: {},
  scenarios: {}
}
const startedAt = Date.now()
for (const [scenario, { title, servers }] of Object.entries(SCENARIOS)) {
  if (only && !only.includes(scenario)) continue
  // --rates 500,1000 --step-ms 10000: other steps for the chosen scenarios (profiling a steady load)
  if (values.rates) sizes[mode][scenario].rates = values.rates.split(',').map(Number)
  if (values['step-ms']) sizes[mode][scenario].stepMs = Number(values['step-ms'])
  const http = sizes[mode][scenario].http
  if (values['step-ms'] && http) http.durationSec = Number(values['step-ms']) / 1000
  results.params[scenario] = sizes[mode][scenario]
  results.scenarios[scenario] = { title, servers: {} }
  for (const name of servers) {
    if (onlyServers && !onlyServers.includes(name)) continue
    process.stderr.write(`${scenario} ${title}: ${name}…`)
    const began = Date.now()
    try {
      results.scenarios[scenario].servers[name] = { ok: true, ...await runOne(scenario, name) }
      process.stderr.write(` ${((Date.now() - began) / 1000).toFixed(1)} s\n`)
    } catch (err) {
      results.scenarios[scenario].servers[name] = { ok: false, error: String((err as Error).message ?? err) }
      process.stderr.write(` failed: ${(err as Error).message}\n`)
    }
  }
}
if (!only || only.includes('S8')) results.scenarios.S8 = { title: 'two instances + Redis', servers: {}, skipped: crossInstanceStatus().reason }
results.durationSeconds = Math.round((Date.now() - startedAt) / 1000)

const outDir = values.out ? resolve(values.out) : join(repoRoot, 'bench', 'results')
mkdirSync(outDir, { recursive: true })
const stamp = results.date.replace(/[:.]/g, '-')
writeFileSync(join(outDir, `${mode}-${stamp}.json`), JSON.stringify(results, null, 2))
writeFileSync(join(outDir, `latest-${mode}.json`), JSON.stringify(results, null, 2))
if (!values['no-docs'] && mode !== 'tiny') writeDocs(results)
process.stdout.write(renderMarkdown(results) + '\n')
pidusage.clear()
