import t from 'tap'
import { build } from './support/helper.js'
import { startServer, root, freePort } from './support/process.js'
import { join } from 'node:path'
import { TestClient } from './support/ws-client.js'
import SwaggerParser from '@apidevtools/swagger-parser'

const json = { 'content-type': 'application/json' }

t.test('every /api route answers identically under /api/v1', async t => {
  const { url, wsUrl } = await build(t, { RATE_LIMIT_MAX: '1000' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => bob.close())
  await fetch(`${url}/api/rooms/doc/state`, { method: 'PATCH', headers: json, body: JSON.stringify({ patch: { title: 'v1' } }) })
  await fetch(`${url}/api/rooms/doc/publish`, { method: 'POST', headers: json, body: JSON.stringify({ data: { n: 1 } }) })

  const same = async (path: string, init?: RequestInit, strip: (b: any) => any = b => b) => {
    const a = await fetch(`${url}/api${path}`, init)
    const b = await fetch(`${url}/api/v1${path}`, init)
    t.equal(b.status, a.status, `${init?.method ?? 'GET'} ${path}: same status`)
    t.same(strip(await b.json()), strip(await a.json()), `${init?.method ?? 'GET'} ${path}: same body`)
  }
  await same('/status', undefined, b => ({ ...b, uptimeSeconds: 0, messages: undefined }))
  await same('/rooms')
  await same('/rooms/doc')
  await same('/rooms/never-used')
  await same('/send', { method: 'POST', headers: json, body: '{}' })
  await same('/rooms/doc/state', { method: 'PATCH', headers: json, body: JSON.stringify({ patch: {}, baseVersion: 99 }) })
  for (const prefix of ['/api', '/api/v1']) {
    const res = await fetch(`${url}${prefix}/send`, { method: 'POST', headers: json, body: JSON.stringify({ from: 'svc', to: 'bob', text: prefix }) })
    t.match(await res.json(), { ok: true, delivered: 1, queued: false })
    t.equal((await bob.next('message')).text, prefix)
    const pub = await fetch(`${url}${prefix}/rooms/doc/publish`, { method: 'POST', headers: json, body: JSON.stringify({ data: prefix }) })
    t.match(await pub.json(), { ok: true, offset: Number })
  }
})

t.test('/docs/json is an OpenAPI 3 document listing every HTTP route with its responses', async t => {
  const { url } = await build(t)
  const res = await fetch(`${url}/docs/json`)
  t.equal(res.status, 200)
  const doc = await res.json() as any
  t.match(doc.openapi, /^3\./)
  await t.resolves(SwaggerParser.validate(structuredClone(doc)), 'a validator accepts it as OpenAPI 3')
  t.match(doc.info, { title: String, version: '1.0.0' })
  const expected: Record<string, string[]> = {
    '/health': ['get'],
    '/ready': ['get'],
    '/metrics': ['get'],
    '/api/send': ['post'],
    '/api/status': ['get'],
    '/api/rooms': ['get'],
    '/api/rooms/{room}': ['get'],
    '/api/rooms/{room}/publish': ['post'],
    '/api/rooms/{room}/state': ['patch'],
    '/api/docs/{doc}': ['get'],
    '/api/docs/{doc}/update': ['get', 'post']
  }
  for (const [path, methods] of Object.entries(expected)) {
    for (const p of [path, path.replace(/^\/api\//, '/api/v1/')]) {
      for (const method of methods) {
        const op = doc.paths[p]?.[method]
        t.ok(op, `${method.toUpperCase()} ${p} is documented`)
        t.ok(op?.responses?.['200'], `${method.toUpperCase()} ${p} documents its 200 response`)
        if (method !== 'get' && !p.includes('/docs/')) t.ok(op?.requestBody?.content?.['application/json']?.schema, `${method.toUpperCase()} ${p} documents its body`)
      }
    }
  }
  t.ok(doc.paths['/api/v1/docs/{doc}/update'].get.responses['200'].content['application/octet-stream'], 'a document\'s state is documented as a binary Yjs update')
  t.notOk(doc.paths['/ws'], 'the WebSocket route is described in docs/protocol.md, not as HTTP')
  const ui = await fetch(`${url}/docs`, { redirect: 'follow' })
  t.equal(ui.status, 200)
  t.match(await ui.text(), /swagger/i, 'the UI is served at /docs')
})

t.test('/docs/json is usable by a person: tags, summaries, examples, described responses, /api/v1 documented once', async t => {
  const { url } = await build(t)
  const doc = await (await fetch(`${url}/docs/json`)).json() as any
  const declared = new Set((doc.tags as Array<{ name: string, description: string }>).map(tag => tag.name))
  for (const tag of doc.tags) t.ok(tag.description, `tag ${tag.name} is described`)
  t.match(doc.components.schemas.Error, { type: 'object', required: ['statusCode', 'error', 'code', 'message'] }, 'one shared Error schema, with code')
  t.match(doc.info.description, /\/docs\/asyncapi\.json/, 'the document points to the WebSocket protocol')
  const used = new Set<string>()
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
    for (const [method, op] of Object.entries(ops)) {
      const name = `${method.toUpperCase()} ${path}`
      t.equal(op.tags?.length, 1, `${name}: one tag`)
      t.ok(declared.has(op.tags?.[0]), `${name}: its tag ${op.tags?.[0]} is declared (not "default")`)
      used.add(op.tags?.[0])
      t.ok(op.summary, `${name}: a summary`)
      t.ok(op.description, `${name}: a description`)
      for (const [status, response] of Object.entries(op.responses as Record<string, any>)) {
        t.ok(response.description && response.description !== 'Default Response', `${name} ${status}: described`)
        if (Number(status) >= 400 && path !== '/ready') {
          t.equal(response.content?.['application/json']?.schema?.$ref, '#/components/schemas/Error', `${name} ${status}: the shared Error schema`)
        }
      }
      const body = op.requestBody?.content?.['application/json']
      if (body) t.ok(body.example ?? body.examples, `${name}: its body has examples`)
      const alias = path.startsWith('/api/') && !path.startsWith('/api/v1/')
      if (alias) {
        t.same(op.tags, ['unversioned alias'], `${name}: marked as the alias`)
        t.equal(op.summary, `Alias of ${method.toUpperCase()} ${path.replace(/^\/api\//, '/api/v1/')}`, `${name}: names the route it aliases`)
        t.ok(doc.paths[path.replace(/^\/api\//, '/api/v1/')]?.[method], `${name}: whose documentation exists`)
      } else if (path.startsWith('/api/v1/')) {
        t.not(op.tags[0], 'unversioned alias', `${name}: documented under its area`)
        t.ok(op.responses['400'] || method === 'get', `${name}: documents its 400`)
      }
    }
  }
  t.same([...declared].filter(tag => !used.has(tag)), [], 'every declared tag has routes')
  t.same([...used].sort(), ['documents', 'health', 'messages', 'rooms', 'status', 'unversioned alias'])
})

t.test('the plugins are exported folder by folder and work in a bare Fastify app (examples/embed)', async t => {
  for (const name of ['core', 'observability', 'http', 'store', 'cluster', 'engine', 'native', 'messages', 'rooms', 'exec']) {
    const specifier = `switchboard/plugins/${name}`
    const mod = await import(specifier)
    t.type(mod.default, 'function', `${specifier} exports a plugin`)
  }
  for (const [specifier, name] of [['core', 'config'], ['engine', 'limits'], ['engine', 'heartbeat'], ['core', 'status'], ['engine', 'sessions'],
    ['native', 'dispatcher'], ['http', 'websocket'], ['core', 'metrics']]) {
    const mod = await import(`switchboard/plugins/${specifier}`)
    t.type(mod[name], 'function', `switchboard/plugins/${specifier} exports the ${name} plugin`)
  }
  const client = await import('switchboard/client' as string)
  t.type(client.connect, 'function', 'switchboard/client exports connect')

  const port = await freePort()
  const srv = await startServer(t, { PORT: String(port) }, {
    args: [join(root, 'examples', 'embed', 'server.mjs')],
    readyPattern: /"event":"embed\.listening"[^\n]*127\.0\.0\.1:(\d+)/
  })
  const c = await TestClient.connect(`ws://127.0.0.1:${srv.port}/ws`)
  t.match(c.welcome, { type: 'welcome', clientId: /^guest-/ })
  t.match(await c.request({ type: 'ping' }), { type: 'pong', timestamp: String }, 'ping/pong from the heartbeat plugin')
  t.match(await c.request({ type: 'echo', hello: 'world' }), { type: 'echo', hello: 'world' }, 'a message type of the host app')
  t.match(await c.request({ type: 'nope' }), { type: 'error', code: 'unknown_type' })
  const status = await (await fetch(`http://127.0.0.1:${srv.port}/status`)).json() as any
  t.match(status, { status: 'ok', version: 'embedded', connections: { total: 1, max: 100 } })
  const extra = await Promise.all(Array.from({ length: 4 }, () => TestClient.connect(`ws://127.0.0.1:${srv.port}/ws`)))
  const refused = await TestClient.connect(`ws://127.0.0.1:${srv.port}/ws`).then(() => 101, (err: Error) => err.message)
  t.match(refused, /429/, 'the limits plugin refuses the 6th connection of one client with 429')
  await Promise.all([c, ...extra].map(x => x.close()))
  srv.proc.kill('SIGTERM')
  await srv.exited
})
