import t from 'tap'
import { join } from 'node:path'
import { tempDir } from './support/helper.js'
import { root, runUntilExit } from './support/process.js'

const fastifyCli = join(root, 'node_modules', 'fastify-cli', 'cli.js')

t.test('a bad variable under fastify start prints the same one line as npm start and exits 1', async t => {
  for (const env of [{ PORT: 'abc' }, { LOG_LEVEL: 'loud' }] as Array<Record<string, string>>) {
    const starts = [['start', '-o', 'dist/app.js'], ['start', 'dist/app.js']]
    // the three processes refuse independently: started together, they take one start-up's time
    const [plain, ...clis] = await Promise.all([
      runUntilExit(t, { ...env, DATA_DIR: tempDir(t) }),
      ...starts.map(args => runUntilExit(t, { ...env, DATA_DIR: tempDir(t) }, { args: [fastifyCli, ...args], cwd: root }))
    ])
    t.equal(plain.code, 1, `node dist/server.js with ${JSON.stringify(env)}`)
    t.match(plain.stderr, /^Invalid configuration: \S+ must be .*\n$/, 'npm start prints one line')
    for (const [i, args] of starts.entries()) {
      const cli = clis[i]
      t.equal(cli.code, 1, `fastify ${args.join(' ')}: exit 1`)
      t.equal(cli.stderr, plain.stderr, `fastify ${args.join(' ')}: the same line`)
      t.notMatch(cli.output, /^\s+at /m, 'no stack trace')
    }
  }
})
