import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { root } from './support/process.js'

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { exports: Record<string, string | { types: string, default: string }> }
const FOLDERS = ['core', 'engine', 'native', 'store', 'cluster', 'messages', 'rooms', 'exec', 'observability', 'http', 'pusher', 'yjs', 'sse', 'admin']

t.test('the package exports the app, the client, the protocol, the server and one plugin per folder, nothing internal', async t => {
  t.same(Object.keys(pkg.exports), ['.', './client', './protocol', './server', ...FOLDERS.map(f => `./plugins/${f}`), './package.json'])
  for (const [key, target] of Object.entries(pkg.exports)) {
    if (typeof target === 'string') continue
    t.notMatch(key, /\*/, `${key}: no wildcard`)
    t.ok(existsSync(join(root, target.default)) && existsSync(join(root, target.types)), `${key}: ${target.default} and its types are built`)
  }
})

t.test('each plugin folder export is a Fastify plugin with a name; an internal module cannot be imported', async t => {
  for (const folder of FOLDERS) {
    const mod = await import(`switchboard/plugins/${folder}`)
    t.type(mod.default, 'function', `switchboard/plugins/${folder} exports a plugin`)
    t.equal(mod.default[Symbol.for('fastify.display-name')], folder === 'cluster' ? 'cluster' : folder === 'exec' ? 'code-execution' : folder, 'its fastify-plugin name')
  }
  const protocol = await import('switchboard/protocol')
  t.type(protocol.applyMergePatch, 'function', 'switchboard/protocol exports the merge patch')
  t.equal(protocol.ERROR_STATUS.version_conflict[0], 409, 'and the HTTP status of each error code')
  for (const internal of ['switchboard/plugins/engine/sessions.js', 'switchboard/plugins/rooms/registry.js', 'switchboard/dist/plugins/store/sqlite.js']) {
    // under tap's loader the error keeps the code in its message only
    const refusal = await import(internal).then(() => 'imported', (err: { code?: string, message: string }) => `${err.code ?? ''} ${err.message}`)
    t.match(refusal, /ERR_PACKAGE_PATH_NOT_EXPORTED/, `${internal} is not exported`)
  }
})
