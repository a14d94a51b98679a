#!/usr/bin/env node
// `npm start` runs this first: it builds (npm run build) only when a source is
// newer than what the last build wrote, so a start with a current dist/ takes
// no compile. A missing output counts as stale.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The newest modification time under `paths` (files, or folders walked for .ts files). */
function newest (paths) {
  let latest = 0
  const visit = (path) => {
    if (!existsSync(path)) return
    const stat = statSync(path)
    if (stat.isDirectory()) {
      for (const name of readdirSync(path)) visit(join(path, name))
    } else if (path.endsWith('.ts') || path.endsWith('.json')) {
      latest = Math.max(latest, stat.mtimeMs)
    }
  }
  for (const path of paths) visit(join(root, path))
  return latest
}

/** The oldest modification time of `outputs`, 0 when one is missing. */
function oldest (outputs) {
  let earliest = Infinity
  for (const output of outputs) {
    const path = join(root, output)
    if (!existsSync(path)) return 0
    earliest = Math.min(earliest, statSync(path).mtimeMs)
  }
  return earliest
}

// what dist/server.js is compiled from, and what the console bundles are built from
const server = { sources: ['app.ts', 'server.ts', 'tsconfig.json', 'protocol', 'plugins', 'routes', 'client', 'types'], outputs: ['dist/server.js', 'dist/app.js'] }
const pages = { sources: ['console', 'protocol'], outputs: ['public/build/console.js', 'public/build/admin.js'] }

const stale = [server, pages].filter(part => newest(part.sources) > oldest(part.outputs))
if (stale.length === 0) process.exit(0)

process.stderr.write('dist/ is older than the sources: npm run build\n')
const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' })
process.exit(build.status ?? 1)
