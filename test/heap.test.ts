import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { root, withoutRunnerHook } from './support/process.js'
import { tempDir } from './support/helper.js'

/**
 * A workload V8 pretenures with its defaults: objects from three literal
 * sites, every one kept past several scavenges. With pretenuring on, V8 traces
 * its feedback for those sites (`undecided => maybe tenure`, then `=> tenure`);
 * with it off, it keeps no feedback and traces nothing.
 */
const WORKLOAD = `
if (process.argv[2] === 'import') await import(${JSON.stringify(join(root, 'dist', 'plugins', 'core', 'heap.js'))})
let keep = []
function make (i) { return { a: i, b: [i, i + 1], c: { d: i } } }
function round () { for (let i = 0; i < 100000; i++) keep.push(make(i)) }
for (let r = 0; r < 20; r++) { round(); if (keep.length > 2e6) keep = [] }
`

async function siteFeedback (t: Test, dir: string, nodeArgs: string[], mode: 'import' | 'plain'): Promise<number> {
  const script = join(dir, 'workload.mjs')
  writeFileSync(script, WORKLOAD)
  // without the test runner's hook (see withoutRunnerHook): the workload alone
  const proc = spawn(...withoutRunnerHook(process.execPath, [...nodeArgs, '--trace-pretenuring', '--trace-pretenuring-statistics', script, mode]), {
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  let out = ''
  proc.stdout.on('data', (c: Buffer) => { out += c.toString() })
  const code = await new Promise<number | null>(resolve => proc.once('exit', resolve))
  t.equal(code, 0, `the workload exits 0 (${mode}, ${nodeArgs.join(' ') || 'no flags'})`)
  return out.split('\n').filter(line => line.includes('pretenuring: AllocationSite')).length
}

t.test('plugins/core/heap.js switches V8 allocation-site pretenuring off, unless the command line names it', async t => {
  const dir = tempDir(t)
  t.ok(await siteFeedback(t, dir, [], 'plain') > 0, 'with V8 defaults the workload\'s sites are pretenured (the check can see it)')
  t.equal(await siteFeedback(t, dir, [], 'import'), 0, 'imported: no site is pretenured')
  t.ok(await siteFeedback(t, dir, ['--allocation-site-pretenuring'], 'import') > 0, 'an explicit --allocation-site-pretenuring is kept')
})

t.test('server.ts and the bench server import it before any other module', async t => {
  for (const file of ['server.js', 'bench/servers/switchboard.js']) {
    const first = readFileSync(join(root, 'dist', file), 'utf8').split('\n').find(line => line.startsWith('import '))
    t.match(first, /^import '(\.\/|\.\.\/\.\.\/)plugins\/core\/heap\.js';?$/, `${file}: the first import is heap.js`)
  }
})
