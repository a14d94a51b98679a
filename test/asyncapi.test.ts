import t from 'tap'
import { Parser } from '@asyncapi/parser'
import { Value } from '@sinclair/typebox/value'
import { FormatRegistry } from '@sinclair/typebox'
import { createSigner } from 'fast-jwt'
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { build } from './support/helper.js'
import { TestClient, type Msg } from './support/ws-client.js'
import type { Static } from '@sinclair/typebox'
import * as S from '../protocol/server-frames.js'
import { SERVER_FRAMES, serverMessageTypes } from '../protocol/server-frames.js'
import { CLIENT_FRAMES, clientFrame } from '../protocol/client-frames.js'
import type * as F from '../protocol/frames.js'

// Compile-time: a frame valid under its protocol/server-frames.ts schema is a
// value of the hand-written type the client uses (protocol/frames.ts stays
// package-free, so it cannot derive them); the build fails if they drift.
// ExecResult is left out: its schema documents `error.code` as any string.
type Fits<A, B> = [A] extends [B] ? true : false
const staticTypesFit: [
  Fits<Static<typeof S.WelcomeFrame>, F.Welcome>,
  Fits<Static<typeof S.MessageFrame>, F.DirectMessage>,
  Fits<Static<typeof S.RoomMessageFrame>, F.RoomMessage>,
  Fits<Static<typeof S.StateFrame>, F.StateChange>,
  Fits<Static<typeof S.PresenceFrame>, F.Presence>,
  Fits<Static<typeof S.JoinedFrame>, F.Joined>,
  Fits<Static<typeof S.ServerShutdownFrame>, F.ServerShutdown>,
  Fits<Static<typeof S.ErrorFrame>, F.ServerError>,
  Fits<Static<typeof S.AckSendFrame>, F.SendAck>,
  Fits<Static<typeof S.AckPublishFrame>, F.PublishAck>,
  Fits<Static<typeof S.AckUpdateFrame>, F.UpdateAck>,
  Fits<Static<typeof S.DisconnectedFrame>, F.Disconnected>,
  Fits<Static<typeof S.HistoryClearedFrame>, F.HistoryCleared>,
  Fits<Static<typeof S.TokenExpiringFrame>, F.TokenExpiring>,
  Fits<Static<typeof S.AckRefreshFrame>, F.RefreshAck>,
  Fits<Static<typeof S.RpcResultFrame>, F.RpcResult>
] = [true, true, true, true, true, true, true, true, true, true, true, true, true, true, true, true]

t.test('/docs/asyncapi.json is a valid AsyncAPI 3 document of the dispatcher\'s message types', async t => {
  const { url, app } = await build(t)
  const res = await fetch(`${url}/docs/asyncapi.json`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /application\/json/)
  const doc = await res.json() as any
  t.match(doc.asyncapi, /^3\./, 'AsyncAPI 3')
  const { document, diagnostics } = await new Parser().parse(structuredClone(doc))
  const problems = diagnostics.filter(d => d.severity <= 1).map(d => `${d.code} at ${d.path.join('.')}: ${d.message}`)
  t.same(problems, [], 'the AsyncAPI parser reports no error or warning')
  t.ok(document, 'and parses it')
  const broken = structuredClone(doc)
  broken.operations.receive_ping.action = 'shout'
  const refused = await new Parser().parse(broken)
  t.ok(refused.diagnostics.some(d => d.severity === 0), 'the same parser refuses an operation with an invalid action')

  const messages = doc.channels.ws.messages
  for (const [type, schema] of app.dispatcher.schemas) {
    t.same(messages[type]?.payload, JSON.parse(JSON.stringify(schema)), `${type}: the payload is the schema the dispatcher validates with`)
    t.match(doc.operations[`receive_${type}`], { action: 'receive', messages: [{ $ref: `#/channels/ws/messages/${type}` }] }, `${type}: a receive operation`)
  }
  for (const [type, fields] of Object.entries(CLIENT_FRAMES)) {
    t.same(JSON.parse(JSON.stringify(app.dispatcher.schemas.get(type) ?? null)), JSON.parse(JSON.stringify(clientFrame(type, fields))), `${type}: the dispatcher enforces the protocol/client-frames.ts schema`)
  }
  const clientTypes = Object.values(doc.operations as Record<string, any>).filter(o => o.action === 'receive').map(o => o.messages[0].$ref.split('/').pop())
  t.same(clientTypes.sort(), [...app.dispatcher.types].sort(), 'no other client message is documented')
  const serverTitles = [...new Set(Object.entries(messages).filter(([name]) => !app.dispatcher.types.includes(name)).map(([, m]: [string, any]) => m.title))]
  t.same(serverTitles.sort(), serverMessageTypes().sort(), 'every server message type is documented')
  t.notOk(((await (await fetch(`${url}/docs/json`)).json()) as any).paths['/docs/asyncapi.json'], 'not an HTTP API route in the OpenAPI document')
})

t.test('what the server sends matches the documented schemas', async t => {
  // the contract's timestamps: ISO 8601, UTC, milliseconds
  FormatRegistry.Set('date-time', v => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(v) && !Number.isNaN(Date.parse(v)))
  // an application backend that allows everything and gives data (welcome, joined, rpc_result)
  const backend = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ allow: true, data: { from: 'backend' } })))
  })
  await new Promise<void>(resolve => backend.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => backend.close(() => resolve())))
  const hooks = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`
  const { wsUrl, url, app } = await build(t, {
    ENABLE_CODE_EXECUTION: 'true',
    ADMIN_TOKEN: 'asyncapi-admin-token-0123456789',
    PROXY_CONNECT_URL: `${hooks}/connect`,
    PROXY_JOIN_URL: `${hooks}/join`,
    PROXY_RPC_URL: `${hooks}/rpc`,
    PROXY_SECRET: `whsec_${randomBytes(32).toString('base64')}`
  })
  const admin = { authorization: 'Bearer asyncapi-admin-token-0123456789' }
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  await bob.request({ type: 'join', room: 'doc' })
  await alice.request({ type: 'ping' })
  await alice.request({ type: 'rpc', method: 'profile.get', data: { id: 1 } })
  await alice.request({ type: 'send', to: 'bob', text: 'hi' })
  await alice.request({ type: 'join', room: 'doc' })
  await alice.request({ type: 'publish', room: 'doc', data: { n: 1 } })
  await alice.request({ type: 'update', room: 'doc', patch: { title: 'x' } })
  await alice.request({ type: 'exec', room: 'doc', code: '1 + 1' })
  await bob.next('exec_result')
  await alice.request({ type: 'publish', room: 'elsewhere', data: 1 })
  await alice.request({ type: 'leave', room: 'doc' })
  await bob.next('presence')
  await fetch(`${url}/api/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ from: 'svc', to: 'carol', text: 'queued' }) })
  const carol = await TestClient.connect(wsUrl, { clientId: 'carol' })
  await carol.next('message')
  // an operator clears the room bob is in, and disconnects dave
  await fetch(`${url}/api/admin/rooms/doc/history`, { method: 'DELETE', headers: admin })
  await bob.next('history_cleared')
  const dave = await TestClient.connect(wsUrl, { clientId: 'dave' })
  await fetch(`${url}/api/admin/clients/dave/disconnect`, { method: 'POST', headers: admin })
  await dave.closed
  // in auth mode: a short token is warned, refreshed with narrower rooms, and a room is left for it
  const secret = 'asyncapi-secret-that-is-long-enough-0123456789'
  const sign = createSigner({ key: secret, algorithm: 'HS256' })
  const authed = await build(t, { AUTH_SECRET: secret })
  const erin = await TestClient.connect(authed.wsUrl, { token: sign({ sub: 'erin', exp: Math.floor(Date.now() / 1000) + 4, rooms: ['a', 'b'] }) })
  await erin.request({ type: 'join', room: 'b' })
  await erin.next('token_expiring')
  await erin.request({ type: 'refresh', token: sign({ sub: 'erin', rooms: ['a'] }) })
  await erin.waitFor(m => m.type === 'left' && m.reason === 'token_refreshed', 'a room left for the refreshed token')
  await erin.close()
  const closing = app.close()
  await Promise.all([alice, bob, carol].map(c => c.next('server_shutdown')))
  await closing

  const shapes = Object.entries(SERVER_FRAMES)
  const seen = new Set<string>()
  for (const m of [...alice.received, ...bob.received, ...carol.received, ...dave.received, ...erin.received] as Msg[]) {
    const candidates = shapes.filter(([, s]) => s.payload.properties.type.const === m.type)
    t.ok(candidates.length > 0, `${m.type} is a documented server message`)
    const fits = candidates.filter(([, s]) => Value.Check(s.payload, m))
    t.ok(fits.length > 0, `${m.type} fits its schema: ${JSON.stringify(m).slice(0, 160)}`)
    for (const [name] of fits) seen.add(name)
  }
  t.same([...seen].sort(), Object.keys(SERVER_FRAMES).sort(), 'the session produced every documented server message')
  // the real check is the compile-time one above; this line reports it
  t.ok(staticTypesFit.every(Boolean), 'protocol/frames.ts types accept what the schemas accept')
})

t.test('the AsyncAPI document describes the streams (/sse, /stream): the /ws frames as events, plus reset and close', async t => {
  const { url } = await build(t)
  const doc = await (await fetch(`${url}/docs/asyncapi.json`)).json() as any
  for (const channel of ['sse', 'stream']) {
    const c = doc.channels[channel]
    t.equal(c.address, `/${channel}`)
    t.same(c.servers, [{ $ref: '#/servers/http' }], `${channel}: served over plain HTTP`)
    for (const name of ['welcome', 'message', 'joined', 'room_message', 'state', 'presence', 'server_shutdown', 'disconnected']) {
      t.same(c.messages[name], { $ref: `#/channels/ws/messages/${name}` }, `${channel}: ${name} is the /ws frame`)
      t.match(doc.operations[`${channel}_${name}`], { action: 'send', channel: { $ref: `#/channels/${channel}` } })
    }
    t.match(c.messages.reset, { name: 'reset', payload: { properties: { recovered: {} } } }, `${channel}: reset carries the joined frame`)
    t.match(c.messages.close, { name: 'close', payload: { properties: { reason: {}, code: {} } } }, `${channel}: close says why`)
  }
  t.match(doc.channels.sse.description, /Last-Event-ID/)
})
