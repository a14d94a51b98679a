import t from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { requestJson, tempDir } from './support/helper.js'
import { freePort, root, startServer, withoutRunnerHook } from './support/process.js'

/** Runs a command to its exit; its stdout and stderr apart. */
async function run (args: string[], env: Record<string, string>, timeoutMs = 20000): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const proc = spawn(...withoutRunnerHook(process.execPath, args), { cwd: root, env: { PATH: process.env.PATH ?? '', PORT: '0', LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
  proc.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | null>(resolve => proc.once('exit', c => resolve(c)))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

t.test('one process per DATA_DIR: a second start exits 1 naming the holder and the path; after kill -9 of the holder a new one starts', async t => {
  const dataDir = tempDir(t)
  const first = await startServer(t, { DATA_DIR: dataDir })
  t.match(await requestJson(`${first.url}/api/rooms/r/publish`, 'POST', { data: 'from the first' }), { status: 200, body: { offset: 1 } })

  const second = await run([join(root, 'dist', 'server.js')], { DATA_DIR: dataDir })
  t.equal(second.code, 1, 'the second server exits 1')
  const lines = second.stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line on stderr: ${second.stderr.trim()}`)
  t.match(lines[0], `in use by process ${first.proc.pid}`, 'it names the holder')
  t.match(lines[0], dataDir, 'and the path')
  t.notMatch(second.stdout, /server\.listening/, 'it never listened')

  // `npm run start:cli` (fastify start dist/app.js) on the same directory is refused too
  const port = await freePort()
  const cli = await run([join(root, 'node_modules', 'fastify-cli', 'cli.js'), 'start', '-o', '-a', '127.0.0.1', '-p', String(port), join(root, 'dist', 'app.js')], { DATA_DIR: dataDir })
  t.equal(cli.code, 1, 'fastify start exits 1')
  t.match(cli.stdout + cli.stderr, `in use by process ${first.proc.pid}`)
  t.match((await requestJson(`${first.url}/api/rooms/r`)).body, { offset: 1 }, 'the holder is untouched and serving')

  first.proc.kill('SIGKILL')
  t.equal((await first.exited).signal, 'SIGKILL')
  const third = await startServer(t, { DATA_DIR: dataDir })
  t.match(third.logs().find(l => l.event === 'store.opened'), { kind: 'sqlite' }, 'the lock did not outlive the kill -9: a new server opens the store')
  t.match(await requestJson(`${third.url}/api/rooms/r/publish`, 'POST', { data: 'from the third' }), { status: 200, body: { offset: 2 } }, 'and carries on where the first stopped')

  third.proc.kill('SIGTERM')
  t.equal((await third.exited).code, 0)
  const fourth = await startServer(t, { DATA_DIR: dataDir })
  t.match((await requestJson(`${fourth.url}/api/rooms/r`)).body, { offset: 2 }, 'after a clean stop the next one starts as well')
})
