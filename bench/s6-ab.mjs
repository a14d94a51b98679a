/**
 * S6 between builds, interleaved: bare Fastify (the yardstick) and Switchboard
 * from one or more dist directories, each in a fresh server process pinned to
 * core 0 (this process, autocannon, on core 1), one after the other in every
 * round. Server CPU time (/proc utime+stime) per POST /api/send to a
 * connected client; per round and as the median of the per-round ratios
 * bare ÷ build, the figure a busy neighbour disturbs least.
 *   node bench/s6-ab.mjs ROUNDS REQUESTS hello=DIST before=OTHER/dist after=DIST[:AUTH=1]
 * (a name starting with `hello` runs bench/servers/fastify-hello.js of its dist;
 * :AUTH=1 sets AUTH_SECRET and sends a bearer token with every request). Linux only.
 */
import { execFileSync, fork } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(import.meta.url)
const autocannon = require('autocannon')
const WebSocket = require('ws')
const [rounds, requests, ...specs] = process.argv.slice(2)
execFileSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' })
const SECRET = 'bench-secret-bench-secret-bench-secret'
const cpuUs = pid => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) * 10000
}
const token = sub => {
  const b64 = o => Buffer.from(JSON.stringify(o)).toString('base64url')
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`
}
const variants = specs.map(s => {
  const [name, rest] = s.split('=')
  const [dir, envs] = rest.split(':')
  return { name, dir, env: Object.fromEntries((envs ?? '').split(',').filter(Boolean).map(e => e.split('='))) }
})
const results = Object.fromEntries(variants.map(v => [v.name, []]))

async function measure (v) {
  const dataDir = mkdtempSync(join(tmpdir(), 'sb-s6-ab-'))
  const hello = v.name.startsWith('hello')
  const auth = v.env.AUTH === '1'
  const env = { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', DATA_DIR: dataDir, RATE_LIMIT_MAX: '100000000', ...(auth ? { AUTH_SECRET: SECRET } : {}) }
  const child = fork(join(v.dir, 'bench/servers', hello ? 'fastify-hello.js' : 'switchboard.js'), [], { env, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  execFileSync('taskset', ['-a', '-p', '-c', '0', String(child.pid)], { stdio: 'ignore' })
  const port = await new Promise(resolve => child.on('message', m => { if (m.type === 'ready') resolve(m.port) }))
  let ws
  if (!hello) {
    ws = new WebSocket(`ws://127.0.0.1:${port}/ws?clientId=target0${auth ? `&token=${token('target0')}` : ''}`)
    await new Promise(resolve => ws.once('message', resolve))
  }
  const headers = { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${token('bench')}` } : {}) }
  const body = JSON.stringify({ from: 'bench', to: 'target0', text: 'hello from autocannon' })
  const run = amount => autocannon({ url: `http://127.0.0.1:${port}/api/send`, method: 'POST', headers, body, connections: 10, amount })
  await run(Math.floor(Number(requests) / 4))
  const before = cpuUs(child.pid)
  const res = await run(Number(requests))
  const used = cpuUs(child.pid) - before
  if (res.non2xx || res.errors) console.log(`${v.name}: ${res.non2xx} non-2xx, ${res.errors} errors`)
  ws?.close()
  child.disconnect()
  await new Promise(resolve => child.once('exit', resolve))
  rmSync(dataDir, { recursive: true, force: true })
  return used / res.requests.total
}

for (let r = 0; r < Number(rounds); r++) {
  for (const v of variants) results[v.name].push(await measure(v))
  console.log(`round ${r + 1}: ` + variants.map(v => `${v.name} ${results[v.name].at(-1).toFixed(1)} µs`).join('  '))
}
const median = a => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]
console.log('median CPU µs/request: ' + variants.map(v => `${v.name} ${median(results[v.name]).toFixed(1)}`).join('  '))
const yardstick = variants.find(v => v.name.startsWith('hello'))
if (yardstick) console.log('bare ÷ build, median of the per-round ratios: ' + variants.map(v => `${v.name} ${median(results[v.name].map((x, i) => results[yardstick.name][i] / x)).toFixed(2)}`).join('  '))
