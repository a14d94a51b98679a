import t from 'tap'
import { execFile } from 'node:child_process'
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import WebSocket from 'ws'
import { tempDir } from './support/helper.js'
import { root, runUntilExit, startServer, withoutRunnerHook } from './support/process.js'

const run = promisify(execFile)
const versionOf = (dir: string, name: string) => (JSON.parse(readFileSync(join(dir, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version

/** What a consumer's TypeScript sees: the app, its options, the client, every exported plugin and a WebSocket route of its own. */
function consumerSource (plugins: string[]): string {
  const imports = plugins.map((name, i) => `import * as plugin${i} from 'switchboard/plugins/${name}'`).join('\n')
  const table = plugins.map((name, i) => `  '${name}': plugin${i}`).join(',\n')
  return `import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import app, { options, type AppOptions } from 'switchboard'
import { connect, type ClientOptions } from 'switchboard/client'
import { websocket, type WebSocketOptions } from 'switchboard/plugins/http'
${imports}

/** Every plugin module the package exports, loaded. */
export const plugins: Record<string, unknown> = {
${table}
}

const portOf = (instance: FastifyInstance): number => {
  const address = instance.server.address()
  return typeof address === 'object' && address !== null ? address.port : 0
}

/** A route of the consumer's own on the package's WebSocket transport. */
async function echo (fastify: FastifyInstance): Promise<void> {
  fastify.get('/echo', { websocket: true }, (socket, request) => {
    socket.on('message', data => socket.send(\`\${request.url}: \${data.toString()}\`))
  })
}

const transport: WebSocketOptions = { maxPayload: 1024 }
const bare = Fastify()
await bare.register(websocket, transport)
await bare.register(echo)
await bare.listen({ port: 0, host: '127.0.0.1' })

const server = Fastify({ ...options, logger: false })
const appOptions: AppOptions = { env: { ...process.env } }
// with fastify-plugin the app's transport is shared with the consumer's own routes (docs: README "As a dependency")
await server.register(fp(app), appOptions)
// a WebSocket route of the consumer's own beside the app's, typed by the augmentation the app's types carry
server.get('/mine', { websocket: true }, (socket, request) => {
  socket.send(\`mine: \${request.url}\`)
})
await server.listen({ port: 0, host: '127.0.0.1' })

// the package's own client against the package's own server
const clientOptions: ClientOptions = { url: \`http://127.0.0.1:\${portOf(server)}\`, clientId: 'consumer' }
const client = await connect(clientOptions)
const rtt: number = await client.ping()
await client.close()

process.stdout.write(\`consumer ready app=\${portOf(server)} echo=\${portOf(bare)} ping=\${rtt >= 0}\\n\`)
`
}

// npm pack, a fresh npm install (newest compatible dependencies, from the registry) and a strict tsc take
// about a minute on an idle machine and several times that on a loaded one: the budget only reports a hang
t.setTimeout(20 * 60 * 1000)

t.test('the npm package as a consumer gets it: packed, installed without optional packages, type-checked strictly, started', async t => {
  const started = Date.now()
  const dir = tempDir(t, 'switchboard-consumer-')

  const { stdout } = await run(...withoutRunnerHook('npm', ['pack', '--json', '--pack-destination', dir]), { cwd: root, maxBuffer: 64 * 1024 * 1024 })
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf('['))) as Array<{ filename: string, size: number, entryCount: number, files: Array<{ path: string }> }>
  const files = packed.files.map(f => f.path)
  t.comment(`tarball: ${packed.size} bytes, ${packed.entryCount} files`)

  await t.test('the tarball holds the built code, its types, the console, the docs and the licence, nothing else', async t => {
    for (const f of ['package.json', 'README.md', 'LICENSE', 'dist/app.js', 'dist/app.d.ts', 'dist/server.js', 'dist/client/index.js', 'dist/client/index.d.ts',
      'dist/plugins/http/websocket.d.ts', 'dist/plugins/exec/sandbox/worker.js', 'dist/protocol/index.js', 'public/index.html', 'public/build/console.js', 'docs/protocol.md']) {
      t.ok(files.includes(f), f)
    }
    t.same(files.filter(f => !/^(dist\/|public\/|docs\/)/.test(f) && !['package.json', 'README.md', 'LICENSE'].includes(f)), [], 'nothing outside dist/, public/, docs/ and the three top files')
    t.same(files.filter(f => /^dist\/(test|bench)\//.test(f)), [], 'no compiled tests or benchmarks')
    t.same(files.filter(f => /^dist\/.*\.map$/.test(f)), [], 'no source maps of sources that are not shipped')
  })

  // a consumer that never enables tracing or code execution: no optional packages
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }))
  // better-sqlite3 takes a minute or more to compile; the project's binding is the same
  // version built for the same Node, so it is copied instead (compiled only if they differ)
  // --prefer-online: the newest versions the package's ranges allow, as a new user gets them (not the lockfile's, not a stale cache's)
  await run(...withoutRunnerHook('npm', ['install', '--omit=optional', '--ignore-scripts', '--prefer-online', '--no-audit', '--no-fund', '--loglevel=error',
    join(dir, packed.filename), `@types/node@${versionOf(root, '@types/node')}`, 'fastify-plugin@^6']), { cwd: dir, maxBuffer: 64 * 1024 * 1024 })
  if (versionOf(dir, 'better-sqlite3') === versionOf(root, 'better-sqlite3')) {
    const release = join(dir, 'node_modules', 'better-sqlite3', 'build', 'Release')
    mkdirSync(release, { recursive: true })
    copyFileSync(join(root, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node'), join(release, 'better_sqlite3.node'))
  } else {
    await run(...withoutRunnerHook('npm', ['rebuild', 'better-sqlite3']), { cwd: dir, maxBuffer: 64 * 1024 * 1024 })
  }
  const installed = join(dir, 'node_modules')
  t.same(['@fastify/otel', '@opentelemetry/sdk-trace-base', '@opentelemetry/exporter-trace-otlp-http', 'quickjs-emscripten'].filter(name => {
    try { return readdirSync(join(installed, name)).length > 0 } catch { return false }
  }), [], 'the optional packages are not installed')

  const exported = Object.keys((JSON.parse(readFileSync(join(installed, 'switchboard', 'package.json'), 'utf8')) as { exports: Record<string, unknown> }).exports)
  const plugins = exported.filter(k => k.startsWith('./plugins/')).map(k => k.slice('./plugins/'.length)).sort()
  t.same(plugins, readdirSync(join(installed, 'switchboard', 'dist', 'plugins')).sort(), 'one export per plugin folder')
  t.ok(plugins.includes('engine') && plugins.includes('rooms') && plugins.length >= 9, `${plugins.length} plugin folders`)
  writeFileSync(join(dir, 'main.ts'), consumerSource(plugins))
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, outDir: 'out', types: ['node'] },
    files: ['main.ts']
  }))

  await t.test('a strict TypeScript consumer type-checks against the published types, skipLibCheck off', async t => {
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
    const result = await run(...withoutRunnerHook(process.execPath, [tsc, '-p', dir]), { cwd: dir }).then(() => ({ code: 0, output: '' }), (err: { code: number, stdout: string }) => ({ code: err.code, output: err.stdout }))
    t.equal(result.output, '', 'no type error')
    t.equal(result.code, 0, 'tsc exits 0')
  })

  await t.test('the installed app starts and serves the console', async t => {
    const server = await startServer(t, { DATA_DIR: tempDir(t, 'switchboard-consumer-data-') }, {
      args: [join(dir, 'out', 'main.js')],
      readyPattern: /consumer ready app=(\d+) echo=\d+ ping=true/
    })
    for (const path of ['/', '/build/console.js']) {
      const res = await fetch(`${server.url}${path}`)
      t.equal(res.status, 200, `GET ${path}`)
      t.ok((await res.text()).length > 100, `${path} has a body`)
    }
    const echoPort = Number(/echo=(\d+)/.exec(server.stdout())?.[1])
    const ws = new WebSocket(`ws://127.0.0.1:${echoPort}/echo`)
    const reply = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send('hello'))
      ws.once('message', data => resolve(data.toString()))
      ws.once('error', reject)
    })
    ws.close()
    t.equal(reply, '/echo: hello', 'the consumer\'s own WebSocket route answers')
    const appPort = Number(/app=(\d+)/.exec(server.stdout())?.[1])
    const mine = new WebSocket(`ws://127.0.0.1:${appPort}/mine?x=1`)
    const greeting = await new Promise<string>((resolve, reject) => {
      mine.once('message', data => resolve(data.toString()))
      mine.once('error', reject)
      mine.once('unexpected-response', (_req, res) => reject(new Error(`GET /mine answered ${res.statusCode}`)))
    })
    mine.close()
    t.equal(greeting, 'mine: /mine?x=1', 'a WebSocket route declared beside the app plugin answers on the app\'s server')
  })

  await t.test('a feature switched on without its optional package stops start-up with one line', async t => {
    const server = join(installed, 'switchboard', 'dist', 'server.js')
    for (const [env, line] of [
      [{ ENABLE_CODE_EXECUTION: 'true' }, 'Invalid configuration: ENABLE_CODE_EXECUTION=true needs the optional package quickjs-emscripten, which is not installed (npm install quickjs-emscripten)'],
      [{ OTEL_TRACES_ENABLED: 'true' }, /^Invalid configuration: tracing \(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_ENABLED=true\) needs the optional package @opentelemetry\/[a-z-]+, which is not installed \(npm install @opentelemetry\/[a-z-]+\)$/]
    ] as const) {
      const { code, output, stderr } = await runUntilExit(t, { ...env, DATA_DIR: tempDir(t, 'switchboard-consumer-data-') }, { args: [server], cwd: dir })
      t.equal(code, 1, `${Object.keys(env)[0]}: exit code 1`)
      // stdout has the log lines of the plugins registered before; stderr has the error, alone
      const lines = stderr.trim().split('\n')
      t.equal(lines.length, 1, `one line on stderr: ${stderr}`)
      t.notMatch(output, /^\s+at /m, 'no stack trace')
      if (typeof line === 'string') t.equal(lines[0], line)
      else t.match(lines[0], line)
    }
  })

  t.comment(`pack, install, type-check and run took ${Math.round((Date.now() - started) / 1000)} s`)
})
