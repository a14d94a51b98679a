// Measures graceful shutdown with N connected clients: SIGTERM → process exit,
// and SIGTERM → the last client's close. Usage: node bench/shutdown.mjs [clients=500]
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'

const clients = Number(process.argv[2] ?? 500)
const dataDir = mkdtempSync(join(tmpdir(), 'sb-shutdown-'))
const proc = spawn(process.execPath, ['dist/server.js'], {
  env: { ...process.env, PORT: '0', DATA_DIR: dataDir, MAX_CONNECTIONS_PER_CLIENT: String(clients), LOG_LEVEL: 'info' },
  stdio: ['ignore', 'pipe', 'inherit']
})
const port = await new Promise(resolve => {
  let out = ''
  proc.stdout.on('data', c => {
    out += c
    const m = /"event":"server\.listening"[^\n]*"port":(\d+)/.exec(out)
    if (m) resolve(Number(m[1]))
  })
  proc.stdout.once('data', () => {})
})
const sockets = []
for (let i = 0; i < clients; i++) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?clientId=c${i}`)
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  sockets.push(ws)
}
let told = 0
const closedAll = Promise.all(sockets.map(ws => new Promise(resolve => {
  ws.on('message', d => { if (JSON.parse(d).type === 'server_shutdown') told++ })
  ws.once('close', code => resolve(code))
})))
const exited = new Promise(resolve => proc.once('exit', code => resolve(code)))
const start = process.hrtime.bigint()
proc.kill('SIGTERM')
const codes = await closedAll
const lastClose = Number(process.hrtime.bigint() - start) / 1e6
const exitCode = await exited
const exit = Number(process.hrtime.bigint() - start) / 1e6
rmSync(dataDir, { recursive: true, force: true })
console.log(JSON.stringify({ clients, told, closedWith1001: codes.filter(c => c === 1001).length, lastCloseMs: Math.round(lastClose), exitMs: Math.round(exit), exitCode }))
