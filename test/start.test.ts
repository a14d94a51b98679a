import t from 'tap'
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { tempDir } from './support/helper.js'
import { root } from './support/process.js'

const scripts = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts

/** A project tree with the real build-if-stale script and a `build` script that only records that it ran. */
function project (t: Parameters<typeof tempDir>[0]): { dir: string, write: (path: string, at: Date) => void, check: () => { status: number | null, built: boolean, stderr: string } } {
  const dir = tempDir(t, 'switchboard-start-')
  mkdirSync(join(dir, 'scripts'))
  copyFileSync(join(root, 'scripts', 'build-if-stale.mjs'), join(dir, 'scripts', 'build-if-stale.mjs'))
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'start-check', private: true, scripts: { build: 'node -e "require(\'fs\').writeFileSync(\'built\', \'\')"' } }))
  const write = (path: string, at: Date) => {
    mkdirSync(dirname(join(dir, path)), { recursive: true })
    writeFileSync(join(dir, path), '// test\n')
    utimesSync(join(dir, path), at, at)
  }
  const check = () => {
    const run = spawnSync(process.execPath, [join(dir, 'scripts', 'build-if-stale.mjs')], { cwd: dir, encoding: 'utf8' })
    const built = existsSync(join(dir, 'built'))
    return { status: run.status, built, stderr: run.stderr }
  }
  return { dir, write, check }
}

t.test('npm start runs the server without compiling when dist/ is current, and builds first when it is not', async t => {
  t.match(scripts.start, /^node scripts\/build-if-stale\.mjs && node dist\/server\.js$/, 'npm start checks dist/, then runs node dist/server.js')
  const earlier = new Date(Date.now() - 60000)
  const later = new Date(Date.now() - 1000)
  const p = project(t)
  for (const source of ['app.ts', 'server.ts', 'plugins/core/config.ts', 'console/admin.ts']) p.write(source, earlier)
  for (const output of ['dist/server.js', 'dist/app.js', 'public/build/console.js', 'public/build/admin.js']) p.write(output, later)
  t.match(p.check(), { status: 0, built: false, stderr: '' }, 'current: no build')

  p.write('plugins/core/config.ts', new Date())
  t.match(p.check(), { status: 0, built: true, stderr: /dist\/ is older than the sources: npm run build/ }, 'a source edited after the build: built first')
})

t.test('npm start builds a fresh clone (no dist/), and a changed console page too', async t => {
  const earlier = new Date(Date.now() - 60000)
  const fresh = project(t)
  fresh.write('app.ts', earlier)
  t.match(fresh.check(), { status: 0, built: true }, 'no dist/: built')

  const pages = project(t)
  for (const source of ['app.ts', 'console/admin.ts']) pages.write(source, earlier)
  for (const output of ['dist/server.js', 'dist/app.js', 'public/build/console.js', 'public/build/admin.js']) pages.write(output, new Date(Date.now() - 30000))
  pages.write('console/admin.ts', new Date())
  t.match(pages.check(), { status: 0, built: true }, 'console/admin.ts newer than public/build: built')
})
