import t from 'tap'
import * as Y from 'yjs'
import { createSigner } from 'fast-jwt'
import { build, waitFor } from './support/helper.js'
import { converged, stateOf, synced, yEditor } from './support/yjs-editors.js'

const SECRET = 'yjs-http-secret-that-is-long-enough-0123456789'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)

t.test('HTTP for backends: the document as JSON and as a Yjs update; a posted update reaches the editors', async t => {
  const { url } = await build(t, { AUTH_SECRET: SECRET })
  const service = { authorization: `Bearer ${sign({ sub: 'backend', role: 'service' })}` }
  const a = yEditor(t, url, 'team/notes', { token: sign({ sub: 'alice', rooms: ['team/*'] }) })
  await synced(a)
  a.text.insert(0, 'hello')
  a.map.set('title', 'Notes')
  a.doc.getArray('list').push([1, 'two'])

  t.equal((await fetch(`${url}/api/docs/team%2Fnotes`)).status, 401, 'a token is required')
  const reader = { authorization: `Bearer ${sign({ sub: 'r', rooms: ['read:team/*'] })}` }
  await waitFor(async () => {
    const res = await fetch(`${url}/api/v1/docs/team%2Fnotes`, { headers: reader })
    return ((await res.json()) as any).roots?.list?.length === 2
  }, 'the edits to be readable over HTTP', 5000, 100)
  const json = await (await fetch(`${url}/api/docs/team%2Fnotes`, { headers: reader })).json()
  t.same(json, { doc: 'team/notes', roots: { t: 'hello', m: { title: 'Notes' }, list: [1, 'two'] }, types: { t: 'text', m: 'map', list: 'array' } })
  const typed = await (await fetch(`${url}/api/docs/team%2Fnotes?types=list:array,empty:text`, { headers: reader })).json() as any
  t.same(typed.roots.empty, '', 'a named root that does not exist yet reads as empty')
  const bad = await fetch(`${url}/api/docs/team%2Fnotes?types=t:string`, { headers: reader })
  t.equal(bad.status, 400)
  t.match(await bad.json(), { code: 'invalid_types', message: /types: "t:string" must be/ })

  const full = Buffer.from(await (await fetch(`${url}/api/docs/team%2Fnotes/update`, { headers: reader })).arrayBuffer())
  t.ok(full.equals(stateOf(a.doc)), 'GET …/update is the full state, byte for byte')

  // a backend writes through a Y.Doc of its own, built from the state it fetched
  const backend = new Y.Doc()
  Y.applyUpdate(backend, full)
  const before = Y.encodeStateVector(backend)
  backend.getText('t').insert(5, ' from the backend')
  const update = Y.encodeStateAsUpdate(backend, before)
  t.equal((await fetch(`${url}/api/docs/team%2Fnotes/update`, { method: 'POST', headers: { ...reader, 'content-type': 'application/octet-stream' }, body: update })).status, 403, 'read-only tokens cannot post')
  const posted = await fetch(`${url}/api/docs/team%2Fnotes/update`, { method: 'POST', headers: { ...service, 'content-type': 'application/octet-stream' }, body: update })
  t.equal(posted.status, 200)
  t.same(await posted.json(), { ok: true, changed: true })
  await waitFor(() => a.text.toString() === 'hello from the backend', 'the editor to receive the backend\'s update')
  await converged([a, { doc: backend }])

  const garbage = await fetch(`${url}/api/docs/team%2Fnotes/update`, { method: 'POST', headers: { ...service, 'content-type': 'application/octet-stream' }, body: Buffer.from([1, 2, 3]) })
  t.equal(garbage.status, 400)
  t.match(await garbage.json(), { code: 'invalid_update', message: /update: not a Yjs update/ })
  t.equal(a.text.toString(), 'hello from the backend', 'nothing changed')
})
