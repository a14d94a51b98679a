import t from 'tap'
import { readFileSync } from 'node:fs'
import { createConnection } from 'node:net'
import { join } from 'node:path'
import { tempDir } from './support/helper.js'
import { root, runUntilExit, startServer } from './support/process.js'

const fastifyCli = join(root, 'node_modules', 'fastify-cli', 'cli.js')
const scripts = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts

/** Whether something accepts TCP connections on host:port. */
async function accepts (host: string, port: number): Promise<boolean> {
  return new Promise(resolve => {
    const socket = createConnection({ host, port }, () => { socket.end(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

t.test('npm run start:cli listens where HOST and PORT say, nowhere else', async t => {
  const prefix = 'npm run build && '
  t.ok(scripts['start:cli'].startsWith(prefix), 'start:cli builds, then runs fastify-cli')
  // 127.0.0.2 is loopback too, but not the default 127.0.0.1: it shows HOST is read
  const server = await startServer(t, { HOST: '127.0.0.2', DATA_DIR: tempDir(t), PATH: `${join(root, 'node_modules', '.bin')}:${process.env.PATH ?? ''}` }, {
    command: 'bash',
    args: ['-c', `exec ${scripts['start:cli'].slice(prefix.length)}`],
    readyPattern: /"event":"server\.address","address":"http:\/\/127\.0\.0\.2:(\d+)"/
  })
  const res = await fetch(`http://127.0.0.2:${server.port}/health`)
  t.equal(res.status, 200, 'serves on HOST')
  t.notOk(await accepts('127.0.0.1', server.port), 'nothing on 127.0.0.1')
  t.same(server.logs().filter(l => l.event === 'server.address').map(l => l.address), [`http://127.0.0.2:${server.port}`], 'one listening address')
})

t.test('bare fastify start with a HOST it would not honour stops with one line, exit 1', async t => {
  const { code, stderr, output } = await runUntilExit(t, { HOST: '127.0.0.2', DATA_DIR: tempDir(t) }, { args: [fastifyCli, 'start', '-o', 'dist/app.js'], cwd: root })
  t.equal(code, 1)
  const lines = stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line: ${stderr}`)
  t.match(lines[0], /^Invalid configuration: HOST is 127\.0\.0\.2 but fastify-cli listens on \S+.* \(it reads -a\/--address or FASTIFY_ADDRESS, not HOST\): run fastify start -a 127\.0\.0\.2, as npm run start:cli does$/)
  t.notMatch(output, /Server listening|"event":"server\.address"/, 'it never says it listens: it stops before listening')
})

t.test('npm run start:cli on a DATA_DIR another process holds prints the store\'s one line, no stack, exit 1', async t => {
  const dataDir = tempDir(t)
  const holder = await startServer(t, { DATA_DIR: dataDir })
  const prefix = 'npm run build && '
  const second = await runUntilExit(t, { DATA_DIR: dataDir, PATH: `${join(root, 'node_modules', '.bin')}:${process.env.PATH ?? ''}` }, {
    command: 'bash',
    args: ['-c', `exec ${scripts['start:cli'].slice(prefix.length)}`],
    cwd: root
  })
  t.equal(second.code, 1, 'exit code 1')
  t.equal(second.stderr, `the SQLite store at ${dataDir} is in use by process ${holder.proc.pid}; one process per DATA_DIR (stop it, or give this one another DATA_DIR)\n`, 'one line naming the holder')
  t.notMatch(second.output, /^\s+at /m, 'no stack trace')
  t.notMatch(second.output, /Server listening|"event":"server\.address"/, 'never listening')
  t.equal((await fetch(`${holder.url}/health`)).status, 200, 'the holder keeps serving')
})
