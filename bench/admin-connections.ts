/**
 * The admin connections page with many connections: how long does one page
 * take, first, deep (a cursor in the middle) and filtered, and how big is it?
 *   npm run bench:admin [-- --connections 10000 --requests 50]
 * The server runs as a child process (node dist/server.js, SQLite store, one
 * instance); this process opens the connections (`ws` clients, 1,000 client
 * ids, every tenth one in a room) and then times the page requests.
 * Target: a page of 25 in well under 100 ms at 10,000 connections, and a
 * response of a few KB whatever the count (the browser never gets the list).
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '10000' },
    requests: { type: 'string', default: '50' }
  }
})
const CONNECTIONS = Number(values.connections)
const REQUESTS = Number(values.requests)
const TOKEN = 'bench-admin-token-0123456789'
const root = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..')

async function main (): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-admin-'))
  const port = 20000 + Math.floor(Math.random() * 20000)
  const server = spawn(process.execPath, [join(root, 'dist', 'server.js')], {
    env: { ...process.env, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn', ADMIN_TOKEN: TOKEN, MAX_CONNECTIONS: String(CONNECTIONS + 100), MAX_CONNECTIONS_PER_CLIENT: String(CONNECTIONS + 100), RATE_LIMIT_MAX: '1000000', WS_MESSAGES_PER_SECOND: '1000', MAX_PENDING_CONNECTIONS: '4096', MAX_PENDING_CONNECTIONS_PER_CLIENT: '4096' },
    stdio: ['ignore', 'inherit', 'inherit']
  })
  const url = `http://127.0.0.1:${port}`
  try {
    for (let i = 0; ; i++) {
      if (await fetch(`${url}/health`).then(r => r.ok, () => false)) break
      if (i > 300) throw new Error('the server did not start')
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const sockets: WebSocket[] = []
    const opened = Date.now()
    for (let batch = 0; batch < CONNECTIONS; batch += 200) {
      await Promise.all(Array.from({ length: Math.min(200, CONNECTIONS - batch) }, (_, j) => new Promise<void>((resolve, reject) => {
        const n = batch + j
        const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?clientId=user-${n % 1000}`)
        sockets.push(ws)
        ws.once('message', () => {
          if (n % 10 === 0) ws.send(JSON.stringify({ type: 'join', room: 'lobby' }))
          resolve()
        })
        ws.once('error', reject)
      })))
    }
    console.log(`${CONNECTIONS} connections open in ${Date.now() - opened} ms`)
    await new Promise(resolve => setTimeout(resolve, 1000))

    const time = async (path: string): Promise<{ ms: number, bytes: number, body: { nextCursor?: string, total: number } }> => {
      const started = process.hrtime.bigint()
      const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } })
      const text = await res.text()
      return { ms: Number(process.hrtime.bigint() - started) / 1e6, bytes: Buffer.byteLength(text), body: JSON.parse(text) }
    }
    const middle = (await time('/api/admin/connections?limit=500&cursor=8')).body.nextCursor ?? ''
    const cases: Array<[string, string]> = [
      ['first page of 25', '/api/admin/connections?limit=25'],
      ['a deep page of 25', `/api/admin/connections?limit=25&cursor=${middle}`],
      ['one client id', '/api/admin/connections?clientId=user-7&limit=25'],
      ['one room', '/api/admin/connections?room=lobby&limit=25'],
      ['search', '/api/admin/connections?search=user-12&limit=25'],
      ['instances', '/api/admin/instances']
    ]
    console.log('| request | p50 ms | p99 ms | bytes | total |')
    console.log('|---|---|---|---|---|')
    for (const [name, path] of cases) {
      const samples: number[] = []
      let last = { bytes: 0, body: { total: 0 } as { total?: number } }
      for (let i = 0; i < REQUESTS; i++) {
        const r = await time(path)
        samples.push(r.ms)
        last = r
      }
      samples.sort((a, b) => a - b)
      const pick = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))].toFixed(1)
      console.log(`| ${name} | ${pick(0.5)} | ${pick(0.99)} | ${last.bytes} | ${last.body.total ?? '–'} |`)
    }
    for (const ws of sockets) ws.terminate()
  } finally {
    server.kill('SIGTERM')
    await new Promise(resolve => server.once('exit', resolve))
    rmSync(dataDir, { recursive: true, force: true })
  }
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
