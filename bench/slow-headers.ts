/**
 * Slow-header (slowloris) wave against a server limited to 1,024 file
 * descriptors: how long until a new WebSocket connects?
 *   npm run bench:slow-headers [-- --sockets 1100 --fds 1024 --addresses 1100]
 * The server runs as a child process (`ulimit -n <fds>`, then node dist/server.js).
 * `--sockets` connections each start a request and trickle a header line every
 * 2 s without ever finishing; each comes from its own loopback address (a
 * botnet: the per-address cap does not save the server, the total cap must),
 * or from `--addresses` addresses. Then a WebSocket client tries to connect,
 * each attempt given 1 s, until one gets its `welcome`.
 * Variants: `capped` (the defaults of MAX_PENDING_CONNECTIONS,
 * MAX_PENDING_CONNECTIONS_PER_CLIENT, PENDING_HEADERS_TIMEOUT_MS) and
 * `uncapped` (the caps raised out of the way: the server before them).
 * Target: a new WebSocket connects within 1 s with the caps on.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'

const { values } = parseArgs({
  options: {
    sockets: { type: 'string', default: '1100' },
    fds: { type: 'string', default: '1024' },
    addresses: { type: 'string', default: '' },
    'give-up-ms': { type: 'string', default: '30000' }
  }
})
const SOCKETS = Number(values.sockets)
const FDS = Number(values.fds)
const ADDRESSES = values.addresses === '' ? SOCKETS : Number(values.addresses)
const GIVE_UP_MS = Number(values['give-up-ms'])
const root = resolve(fileURLToPath(new URL('../..', import.meta.url)))

const addr = (i: number) => `127.3.${Math.floor(i / 250)}.${(i % 250) + 1}`
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

async function startServer (env: Record<string, string>): Promise<{ proc: ChildProcess, port: number, stop: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-slowloris-'))
  const proc = spawn('sh', ['-c', `ulimit -n ${FDS} && exec "${process.execPath}" dist/server.js`], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', DATA_DIR: dataDir, MAX_CONNECTIONS_PER_CLIENT: '1000', ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  let out = ''
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), 20000)
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString()
      const m = /"event":"server\.listening"[^\n]*"port":(\d+)/.exec(out)
      if (m) { clearTimeout(timer); resolve(Number(m[1])) }
    })
    proc.once('exit', code => reject(new Error(`server exited with ${code}: ${out}`)))
  })
  const stop = async () => {
    proc.kill('SIGKILL')
    await new Promise(resolve => proc.once('exit', resolve))
    rmSync(dataDir, { recursive: true, force: true })
  }
  return { proc, port, stop }
}

function slowSocket (port: number, localAddress: string, open: Set<Socket>): Socket {
  const socket = connect({ port, host: '127.0.0.1', localAddress })
  socket.on('error', () => {})
  socket.once('connect', () => {
    open.add(socket)
    socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n')
    const trickle = setInterval(() => { if (!socket.destroyed) socket.write('X-Slow: 1\r\n') }, 2000)
    socket.once('close', () => { clearInterval(trickle); open.delete(socket) })
  })
  return socket
}

/** One attempt: resolves with true when `welcome` arrives within 1 s. */
function attempt (port: number): Promise<boolean> {
  return new Promise(resolve => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { localAddress: '127.0.0.1' })
    const timer = setTimeout(() => { ws.terminate(); resolve(false) }, 1000)
    ws.once('message', () => { clearTimeout(timer); ws.close(); resolve(true) })
    ws.once('error', () => { clearTimeout(timer); resolve(false) })
  })
}

async function run (variant: string, env: Record<string, string>) {
  const server = await startServer(env)
  const open = new Set<Socket>()
  const all: Socket[] = []
  try {
    const waveStarted = performance.now()
    for (let i = 0; i < SOCKETS; i++) {
      all.push(slowSocket(server.port, addr(i % ADDRESSES), open))
      if (i % 100 === 99) await sleep(10)
    }
    await sleep(500)
    const serverFds = readdirSync(`/proc/${server.proc.pid}/fd`).length
    const heldBySlow = open.size
    const started = performance.now()
    let attempts = 0
    let connected = false
    while (!connected && performance.now() - started < GIVE_UP_MS) {
      attempts++
      connected = await attempt(server.port)
      if (!connected) await sleep(100)
    }
    const connectMs = Math.round(performance.now() - started)
    return {
      variant,
      slowSockets: SOCKETS,
      addresses: ADDRESSES,
      fdLimit: FDS,
      waveMs: Math.round(started - waveStarted),
      serverFdsAfterWave: serverFds,
      slowSocketsStillOpen: heldBySlow,
      newWebSocket: connected ? { connectMs, attempts } : { connectMs: null, attempts, gaveUpAfterMs: GIVE_UP_MS },
      pass: connected && connectMs <= 1000
    }
  } finally {
    for (const s of all) s.destroy()
    await server.stop()
  }
}

const results = [
  await run('capped', {}),
  await run('uncapped', { MAX_PENDING_CONNECTIONS: '1000000', MAX_PENDING_CONNECTIONS_PER_CLIENT: '1000000', PENDING_HEADERS_TIMEOUT_MS: '60000' })
]
console.log(JSON.stringify(results, null, 2))
