import { execFile } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { tempDir, type TestContext } from './helper.js'
import { root, withoutRunnerHook } from './process.js'

const run = promisify(execFile)

/**
 * Runs the benchmark harness (dist/bench/run.js) in tiny mode with `args`
 * (`--only`, `--servers`) into a temp directory and returns its results file.
 * No deadline of its own: the run ends when the harness exits (killed at teardown if still running).
 */
export async function tinyBench (t: TestContext, args: string[]): Promise<Record<string, any>> {
  const out = tempDir(t, 'switchboard-bench-smoke-')
  const running = run(...withoutRunnerHook(process.execPath, [join(root, 'dist', 'bench', 'run.js'), '--tiny', '--no-docs', ...args, '--out', out]))
  // a test that ends first (a failure, tap's timeout) takes the harness with it
  t.teardown(() => { if (running.child.exitCode === null) running.child.kill('SIGTERM') })
  await running
  const file = readdirSync(out).find(f => f.startsWith('latest-tiny'))
  if (file === undefined) throw new Error(`the harness wrote no latest-tiny results file in ${out}`)
  return JSON.parse(readFileSync(join(out, file), 'utf8'))
}
