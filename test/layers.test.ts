import t from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { root } from './support/process.js'

/**
 * The layers of the tree, lowest first: a file may import its own folder and
 * the layers below it, never above, and a feature never imports another
 * feature. Read from the TypeScript sources' import statements (every import
 * of ours is a static relative path), so the rule is checked without a build.
 */
const LAYERS: Array<{ rank: number, folders: string[] }> = [
  { rank: 0, folders: ['protocol'] },
  { rank: 1, folders: ['plugins/core'] },
  { rank: 2, folders: ['plugins/transport'] },
  { rank: 3, folders: ['plugins/store'] },
  { rank: 4, folders: ['plugins/cluster'] },
  { rank: 5, folders: ['plugins/messages', 'plugins/rooms', 'plugins/exec'] },
  { rank: 6, folders: ['plugins/observability'] },
  { rank: 7, folders: ['plugins/http'] },
  // protocol adapters: other projects' wire protocols (Pusher, Yjs) with their own
  // endpoints, built on every layer below; never on each other
  { rank: 7.5, folders: ['plugins/pusher', 'plugins/yjs'] },
  // the operator's views and actions over every other plugin's decorators
  { rank: 7.8, folders: ['plugins/admin'] },
  { rank: 8, folders: ['routes'] },
  { rank: 9, folders: ['app.ts'] },
  { rank: 10, folders: ['server.ts'] }
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
