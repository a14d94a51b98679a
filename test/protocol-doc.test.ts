import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { ERROR_CODES, serverMessageTypes } from '../protocol/server-frames.js'
import { HTTP_ERROR_CODES } from '../plugins/core/errors.js'
import { ERROR_STATUS } from '../protocol/errors.js'

const doc = readFileSync(fileURLToPath(new URL('../../docs/protocol.md', import.meta.url)), 'utf8')

/** The first column of the table under a heading, backticks stripped. */
function firstColumn (heading: string): string[] {
  const lines = doc.split('\n')
  const start = lines.indexOf(heading)
  if (start < 0) return []
  const rows: string[] = []
  for (const line of lines.slice(start + 1)) {
    if (/^#{1,6} /.test(line)) break
    if (!line.startsWith('|') || /^\|[-| ]+\|$/.test(line)) continue
    rows.push(line.split('|')[1].trim().replace(/`/g, ''))
  }
  return rows.slice(1) // the header row
}

t.test('docs/protocol.md stands alone: no pointer outside the repository', async t => {
  t.notMatch(doc, /shared\//, 'no shared/ path')
  t.notMatch(doc, /CONTRACT/i, 'no contract file')
  for (const [, target] of doc.matchAll(/\]\(([^)#]+)[^)]*\)/g)) {
    t.ok(!target.startsWith('..') && !target.includes('shared'), `link ${target} stays in the repository`)
  }
})

t.test('the message tables of docs/protocol.md are the registered message types, both directions', async t => {
  const { wsUrl, app } = await build(t)
  const client = firstColumn('## Client messages')
  t.ok(client.length > 0, 'a Client messages table')
  t.same([...client].sort(), [...app.dispatcher.types].sort(), 'client→server: exactly the types registered in the dispatcher')
  t.equal(new Set(client).size, client.length, 'each once')

  const server = firstColumn('## Server messages')
  t.ok(server.length > 0, 'a Server messages table')
  t.same([...server].sort(), serverMessageTypes().sort(), 'server→client: exactly the documented server message types')

  t.same(firstColumn('### WebSocket error codes').sort(), Object.keys(ERROR_CODES).sort(), 'every WebSocket error code, and no other')
  t.same(Object.keys(ERROR_STATUS).sort(), Object.keys(ERROR_CODES).sort(), 'protocol/errors.ts gives each of them its HTTP status')
  t.same(firstColumn('### HTTP error codes').sort(), Object.keys(HTTP_ERROR_CODES).sort(), 'every HTTP-only error code, and no other')

  const c = await TestClient.connect(wsUrl)
  t.teardown(() => c.close())
  t.same(firstColumn('### `welcome.limits`').sort(), Object.keys(c.welcome.limits).sort(), 'welcome.limits: every limit the server announces, and no other')
})
