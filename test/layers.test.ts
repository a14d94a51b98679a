import t from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { root } from './support/process.js'

/**
 * The layers of the tree, lowest first. A file may import its own folder and
 * the layers below it, never above, and a feature never imports another
 * feature; a plugin may declare as dependencies only plugins of its own
 * folder or below. Read from the TypeScript sources (every import of ours is a
 * static relative path; every plugin names itself and its dependencies in its
 * fastify-plugin meta), so the rules are checked without a build.
 */
const LAYERS: Array<{ rank: number, folders: string[], what: string }> = [
  { rank: 0, folders: ['protocol'], what: 'the wire, shared with the client' },
  { rank: 1, folders: ['plugins/core'], what: 'configuration, errors, identity, lifecycle and health (status), metrics, the Redis link' },
  { rank: 2, folders: ['plugins/observability'], what: 'traces and request logs' },
  { rank: 3, folders: ['plugins/http'], what: 'thin wrappers of third-party plugins (CORS, WebSocket server, rate limit, OpenAPI, pages)' },
  { rank: 4, folders: ['plugins/store'], what: 'the one store' },
  { rank: 5, folders: ['plugins/cluster'], what: 'the other instances: broker, presence, client directory' },
  { rank: 6, folders: ['plugins/engine'], what: 'sessions of every protocol, access, limits, shutdown, ordered delivery' },
  { rank: 7, folders: ['plugins/native'], what: 'the native protocol\'s codec (/ws)' },
  { rank: 8, folders: ['plugins/messages', 'plugins/rooms'], what: 'features: direct messages and inboxes, rooms with state, history and presence' },
  { rank: 8.5, folders: ['plugins/exec'], what: 'code execution in a room (built on rooms)' },
  // protocol adapters: other projects' wire protocols (Pusher, Yjs) and other transports (SSE, NDJSON), built on every layer below; never on each other
  { rank: 9, folders: ['plugins/pusher', 'plugins/yjs', 'plugins/sse'], what: 'protocol adapters' },
  { rank: 10, folders: ['plugins/admin'], what: 'the operator\'s views and actions over every other plugin\'s decorators' },
  { rank: 11, folders: ['routes'], what: 'routes' },
  { rank: 12, folders: ['app.ts'], what: 'the app plugin' },
  { rank: 13, folders: ['server.ts'], what: 'the standalone server' }
]

function folderOf (file: string): { folder: string, rank: number } | null {
  for (const { rank, folders } of LAYERS) {
    for (const folder of folders) if (file === folder || file.startsWith(folder + '/')) return { folder, rank }
  }
  return null
}

function sources (dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(join(root, dir))) {
    const path = join(dir, name)
    if (statSync(join(root, path)).isDirectory()) out.push(...sources(path))
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path)
  }
  return out
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\b[^'"]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g

/** Every relative import of a source file, as a path from the project root (.ts). */
function importsOf (file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8')
  const out: string[] = []
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2] ?? m[3]
    if (!spec.startsWith('.')) continue
    out.push(normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts'))
  }
  return out
}

const files = [...sources('protocol'), ...sources('plugins'), ...sources('routes'), ...sources('client'), ...sources('console'), 'app.ts', 'server.ts']
const graph = new Map(files.map(f => [f, importsOf(f)]))

/** Every fastify-plugin meta of the plugins: its name, its declared dependencies and the file it is in. */
const PLUGIN_META = /\{\s*name:\s*'([^']+)',\s*fastify:\s*'5\.x'(?:,\s*dependencies:\s*\[([^\]]*)\])?\s*\}/g
const plugins = new Map<string, { file: string, dependencies: string[] }>()
for (const file of files.filter(f => f.startsWith('plugins/'))) {
  for (const m of readFileSync(join(root, file), 'utf8').matchAll(PLUGIN_META)) {
    const dependencies = (m[2] ?? '').split(',').map(d => d.trim().replace(/^'|'$/g, '')).filter(Boolean)
    plugins.set(m[1], { file, dependencies })
  }
}

t.test('every import points to the same folder or a lower layer, and no feature imports another', async t => {
  const wrong: string[] = []
  for (const [file, imports] of graph) {
    const from = folderOf(file)
    if (!from) continue
    for (const target of imports) {
      const to = folderOf(target)
      if (to === null) wrong.push(`${file} → ${target} (outside the layers)`)
      else if (to.folder !== from.folder && to.rank >= from.rank) wrong.push(`${file} → ${target} (${to.folder} is not below ${from.folder})`)
    }
  }
  t.same(wrong, [], 'no upward or sideways import')
})

t.test('every plugin declares as dependencies only plugins of its own folder or a lower layer', async t => {
  t.ok(plugins.size > 30, `${plugins.size} plugins read`)
  const wrong: string[] = []
  const unknown: string[] = []
  for (const [name, { file, dependencies }] of plugins) {
    const from = folderOf(file)!
    for (const dependency of dependencies) {
      const target = plugins.get(dependency)
      // @fastify/* plugins wrapped in plugins/http carry their own names
      if (target === undefined) {
        if (!dependency.startsWith('@fastify/')) unknown.push(`${name} → ${dependency}`)
        continue
      }
      const to = folderOf(target.file)!
      if (to.folder !== from.folder && to.rank >= from.rank) wrong.push(`${name} (${from.folder}) → ${dependency} (${to.folder})`)
    }
  }
  t.same(unknown, [], 'every dependency is a plugin of the project')
  t.same(wrong, [], 'no plugin depends on one above it')
  // the lifecycle (what /ready and /api/status say) is at the bottom: everything may report to it
  t.equal(folderOf(plugins.get('status')!.file)!.folder, 'plugins/core', 'status sits in core')
})

t.test('no plugin asks whether another is registered: a real dependency is declared', async t => {
  const asking = files.filter(f => (f.startsWith('plugins/') || f.startsWith('routes/')) && readFileSync(join(root, f), 'utf8').includes('hasDecorator('))
  t.same(asking, [], 'no hasDecorator in plugins or routes')
})

t.test('the client and the console import only themselves and protocol/, never TypeBox schemas or server code', async t => {
  // the TypeBox schemas (and the index that re-exports them) stay on the server
  const SERVER_SIDE = ['protocol/schemas.ts', 'protocol/server-frames.ts', 'protocol/client-frames.ts', 'protocol/index.ts']
  const wrong: string[] = []
  for (const [file, imports] of graph) {
    if (!file.startsWith('client/') && !file.startsWith('console/')) continue
    for (const target of imports) {
      const allowed = target.startsWith('client/') || target.startsWith('console/') || (target.startsWith('protocol/') && !SERVER_SIDE.includes(target))
      if (!allowed) wrong.push(`${file} → ${target}`)
    }
  }
  t.same(wrong, [], 'the browser bundle holds no server module')
  const runtime = ['protocol/frames.ts', 'protocol/errors.ts', 'protocol/limits.ts', 'protocol/merge-patch.ts']
    .filter(f => /from\s*['"](?!\.)/.test(readFileSync(join(root, f), 'utf8')))
  t.same(runtime, [], 'what the client takes from protocol/ imports no package')
})

t.test('the import graph has no cycle', async t => {
  const cycles: string[] = []
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const visit = (file: string) => {
    state.set(file, 'open')
    stack.push(file)
    for (const next of graph.get(file) ?? []) {
      if (!graph.has(next)) continue
      if (state.get(next) === 'open') cycles.push([...stack.slice(stack.indexOf(next)), next].map(f => relative('.', f)).join(' → '))
      else if (!state.has(next)) visit(next)
    }
    stack.pop()
    state.set(file, 'done')
  }
  for (const file of graph.keys()) if (!state.has(file)) visit(file)
  t.same(cycles, [], 'no module imports itself through others')
  t.ok(graph.size > 50, `${graph.size} modules read`)
})
