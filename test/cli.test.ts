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
  const { code, stderr } = await runUntilExit(t, { HOST: '127.0.0.2', DATA_DIR: tempDir(t) }, { args: [fastifyCli, 'start', '-o', 'dist/app.js'], cwd: root })
  t.equal(code, 1)
  const lines = stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line: ${stderr}`)
  t.match(lines[0], /^Invalid configuration: HOST is 127\.0\.0\.2 but fastify-cli listens on \S+.* \(it reads -a\/--address or FASTIFY_ADDRESS, not HOST\): run fastify start -a 127\.0\.0\.2, as npm run start:cli does$/)
})

t.test('a bad variable under fastify start prints the same one line as npm start and exits 1', async t => {
  for (const env of [{ PORT: 'abc' }, { LOG_LEVEL: 'loud' }] as Array<Record<string, string>>) {
    const plain = await runUntilExit(t, { ...env, DATA_DIR: tempDir(t) })
    t.equal(plain.code, 1, `node dist/server.js with ${JSON.stringify(env)}`)
    t.match(plain.stderr, /^Invalid configuration: \S+ must be .*\n$/, 'npm start prints one line')
    for (const args of [['start', '-o', 'dist/app.js'], ['start', 'dist/app.js']]) {
      const cli = await runUntilExit(t, { ...env, DATA_DIR: tempDir(t) }, { args: [fastifyCli, ...args], cwd: root })
      t.equal(cli.code, 1, `fastify ${args.join(' ')}: exit 1`)
      t.equal(cli.stderr, plain.stderr, `fastify ${args.join(' ')}: the same line`)
      t.notMatch(cli.output, /^\s+at /m, 'no stack trace')
    }
  }
})
