#!/usr/bin/env node
// `npm run dev`: builds once, then recompiles on every change (tsc --watch for
// the server, esbuild --watch for the console pages) and restarts the server
// whenever its compiled files change (node --watch). Ctrl-C stops all three.
import { spawn, spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const bin = (name) => join(root, 'node_modules', '.bin', name)

const first = spawnSync(process.execPath, [join(root, 'scripts', 'build-if-stale.mjs')], { cwd: root, stdio: 'inherit' })
if (first.status !== 0) process.exit(first.status ?? 1)

const children = [
  spawn(bin('tsc'), ['-p', 'tsconfig.json', '--watch', '--preserveWatchOutput'], { cwd: root, stdio: 'inherit' }),
  spawn(bin('esbuild'), ['console=console/main.ts', 'admin=console/admin.ts', '--bundle', '--format=esm', '--platform=browser', '--target=es2022',
    '--external:ws', '--sourcemap', '--log-level=warning', '--outdir=public/build', '--watch=forever'], { cwd: root, stdio: 'inherit' }),
  spawn(process.execPath, ['--watch', join(root, 'dist', 'server.js')], { cwd: root, stdio: 'inherit' })
]

let stopping = false
function stop (code) {
  if (stopping) return
  stopping = true
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM')
  process.exitCode = code
}
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => stop(0))
// one of them ending (a crash, a bad flag) ends the session rather than leaving a half-working watch
for (const child of children) child.once('exit', code => stop(code ?? 1))
