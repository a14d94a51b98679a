/**
 * Collaborative typing, Switchboard (/collab, every update committed to
 * SQLite before it is relayed) against @hocuspocus/server 3.4.4 (in memory,
 * no store), same run, same machine, the same real @hocuspocus/provider
 * clients in this process:
 *   npm run bench:yjs [-- --docs 100 --editors 5 --rate 2 --seconds 10]
 *     [--servers switchboard,hocuspocus] [--baseline OTHER/dist] [--cpu-prof DIR]
 * As in the other scenarios, each server runs pinned to core 0 and this
 * process (the providers) to core 1, when there are two cores and `taskset`.
 * `--baseline`: also runs the Switchboard built in another checkout's dist/
 * (before/after a change, same session); `--cpu-prof`: every server writes
 * a V8 CPU profile there (node --cpu-prof) when it exits.
 * Each editor sets its own key of a Y.Map to Date.now() `rate` times a
 * second; every other editor of the document records the delay until it
 * sees it. Reported per server: updates/s sent and delivered, delivery p50/p99,
 * server CPU per sent update, server RSS per open document (with its editors).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import pidusage from 'pidusage'
import { cpuMs } from './cpu.js'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { freePort, root } from '../test/support/process.js'
import { pin, pinning } from './pin.js'

const { values } = parseArgs({
  options: {
    docs: { type: 'string', default: '100' },
    editors: { type: 'string', default: '5' },
    rate: { type: 'string', default: '2' },
    seconds: { type: 'string', default: '10' },
    servers: { type: 'string', default: 'switchboard,hocuspocus' },
    baseline: { type: 'string' },
    'cpu-prof': { type: 'string' }
  }
})
const DOCS = Number(values.docs)
const EDITORS = Number(values.editors)
const RATE = Number(values.rate)
const SECONDS = Number(values.seconds)
const SERVERS = values.servers.split(',').map(s => s.trim())
if (values.baseline) SERVERS.splice(1, 0, 'switchboard-baseline')

/** Server on core 0, providers on core 1 (bench/run.ts pins its scenarios the same way). */
pin(process.pid, 1)

async function start (name: string, args: string[], env: Record<string, string>, ready: RegExp): Promise<{ proc: ChildProcess, port: number }> {
  // taskset execs node: the pid is the server's, and every thread it starts stays on core 0
  const [command, argv] = pinning ? ['taskset', ['-c', '0', process.execPath, ...args]] : [process.execPath, args]
  const proc = spawn(command, argv, { cwd: root, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString()
      const m = ready.exec(out)
      if (m) resolve(Number(m[1]))
    })
    proc.once('exit', code => reject(new Error(`${name} exited with ${code}: ${out}`)))
  })
  proc.stdout!.resume()
  return { proc, port }
}

/** SIGTERM, then the exit (a --cpu-prof profile is written on the way out). */
async function stop (proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise(resolve => proc.once('exit', resolve))
  proc.kill('SIGTERM')
  await exited
}

/** User and system CPU ticks of a process (Linux /proc), or null elsewhere: how much of its CPU the kernel spent (socket writes, fsync). */
function cpuTicks (pid: number): { user: number, system: number } | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return { user: Number(fields[11]), system: Number(fields[12]) }
  } catch {
    return null
  }
}

function percentile (sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

async function run (name: string, proc: ChildProcess, url: string) {
  const pid = proc.pid as number
  const rssBefore = (await pidusage(pid)).memory
  const sockets: HocuspocusProviderWebsocket[] = []
  const editors: Array<{ doc: Y.Doc, provider: HocuspocusProvider, key: string }> = []
  const delays: number[] = []
  let sent = 0
  for (let d = 0; d < DOCS; d++) {
    for (let e = 0; e < EDITORS; e++) {
      const socket = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket as any })
      const doc = new Y.Doc()
      const key = `e${e}`
      const provider = new HocuspocusProvider({ websocketProvider: socket, name: `bench/${d}`, document: doc, token: 'bench' })
      provider.attach()
      const map = doc.getMap<number>('m')
      map.observe((event, transaction) => {
        if (transaction.local) return
        const now = Date.now()
        for (const changed of event.keysChanged) if (changed !== key) delays.push(now - (map.get(changed) ?? now))
      })
      sockets.push(socket)
      editors.push({ doc, provider, key })
    }
  }
  const until = Date.now() + 120000
  while (!editors.every(e => e.provider.synced)) {
    if (Date.now() > until) throw new Error(`${name}: editors did not sync`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  await new Promise(resolve => setTimeout(resolve, 1000))
  const rssOpen = (await pidusage(pid)).memory
  const cpuBefore = await cpuMs(pid)
  const ticksBefore = cpuTicks(pid)
  delays.length = 0
  const started = Date.now()
  const timers = editors.map((e, i) => setTimeout(() => {
    const tick = () => {
      e.doc.getMap<number>('m').set(e.key, Date.now())
      sent++
    }
    tick()
    timers[i] = setInterval(tick, 1000 / RATE) as unknown as NodeJS.Timeout
  }, Math.random() * 1000 / RATE))
  await new Promise(resolve => setTimeout(resolve, SECONDS * 1000))
  for (const timer of timers) clearInterval(timer)
  const elapsed = (Date.now() - started) / 1000
  // the last deliveries: until every one arrived, or none for 2 s (a loaded machine may leave a backlog), so
  // that the server's CPU time covers the work for every update sent
  for (let last = delays.length, quietSince = Date.now(); delays.length < sent * (EDITORS - 1) && Date.now() - quietSince < 2000;) {
    await new Promise(resolve => setTimeout(resolve, 100))
    if (delays.length !== last) {
      last = delays.length
      quietSince = Date.now()
    }
  }
  const cpuAfter = await cpuMs(pid)
  const ticksAfter = cpuTicks(pid)
  const user = ticksBefore && ticksAfter ? ticksAfter.user - ticksBefore.user : NaN
  const system = ticksBefore && ticksAfter ? ticksAfter.system - ticksBefore.system : NaN
  for (const e of editors) e.provider.destroy()
  for (const s of sockets) s.destroy()
  const sorted = delays.sort((a, b) => a - b)
  return {
    server: name,
    updatesSentPerSecond: Math.round(sent / elapsed),
    deliveriesPerSecond: Math.round(delays.length / elapsed),
    deliveryExpected: sent * (EDITORS - 1),
    deliveryReceived: delays.length,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    serverCpuUsPerUpdate: Math.round((cpuAfter - cpuBefore) * 1000 / sent),
    serverSystemCpuShare: Math.round(100 * system / (user + system)) / 100,
    serverRssPerOpenDocumentKB: Math.round((rssOpen - rssBefore) / DOCS / 1024)
  }
}

const results = []
for (const server of SERVERS) {
  if (server === 'switchboard' || server === 'switchboard-baseline') {
    const dist = server === 'switchboard' ? join(root, 'dist') : resolve(values.baseline!)
    const dir = mkdtempSync(join(tmpdir(), 'yjs-bench-'))
    const prof = values['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', resolve(values['cpu-prof']), '--cpu-prof-name', `${server}-${Date.now()}.cpuprofile`] : []
    const { proc, port } = await start(server, [...prof, join(dist, 'server.js')], {
      PORT: '0', DATA_DIR: dir, LOG_LEVEL: 'info', MAX_CONNECTIONS: '100000', MAX_CONNECTIONS_PER_CLIENT: '100000', YJS_UPDATES_PER_SECOND: '1000', YJS_MAX_DOCUMENTS_PER_CONNECTION: '20', MAX_PENDING_CONNECTIONS: '100000', MAX_PENDING_CONNECTIONS_PER_CLIENT: '100000'
    }, /"event":"server\.listening"[^\n]*"port":(\d+)/)
    try {
      results.push(await run(`${server} (SQLite, committed before relayed)`, proc, `ws://127.0.0.1:${port}/collab`))
    } finally {
      await stop(proc)
      rmSync(dir, { recursive: true, force: true })
    }
  } else if (server === 'hocuspocus') {
    const port = await freePort()
    const prof = values['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', resolve(values['cpu-prof']), '--cpu-prof-name', `hocuspocus-${Date.now()}.cpuprofile`] : []
    const { proc } = await start('hocuspocus', [...prof, join(root, 'dist', 'bench', 'servers', 'hocuspocus.js')], { PORT: String(port) }, /"port":(\d+)/)
    try {
      results.push(await run('@hocuspocus/server 3.4.4 (memory only)', proc, `ws://127.0.0.1:${port}`))
    } finally {
      await stop(proc)
    }
  } else {
    throw new Error(`--servers: unknown server ${server} (switchboard, hocuspocus)`)
  }
}
console.log(JSON.stringify({ node: process.version, pinned: pinning, docs: DOCS, editorsPerDoc: EDITORS, updatesPerEditorPerSecond: RATE, seconds: SECONDS, results }, null, 2))
process.exit(0)
