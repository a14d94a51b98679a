import t from 'tap'
import { build, requestJson } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { jsonDepth } from '../plugins/engine/json-limits.js'

const LEVELS = 10000
/** `[[[...1...]]]` nested `levels` deep, as JSON text. */
const deepArray = (levels: number) => '['.repeat(levels) + '1' + ']'.repeat(levels)
/** `{"a":{"a":...1...}}` nested `levels` deep, as JSON text. */
const deepObject = (levels: number) => '{"a":'.repeat(levels) + '1' + '}'.repeat(levels)
const errorLines = (logs: Array<Record<string, any>>) => logs.filter(l => l.level >= 50)

t.test('jsonDepth walks 100,000 levels without recursion and stops at the limit', async t => {
  const deep = JSON.parse(deepArray(100000))
  t.equal(jsonDepth(deep, 64), -1)
  t.equal(jsonDepth(deep, 200000), 100000)
  t.equal(jsonDepth({ a: [1, { b: null }] }, 64), 3)
  t.equal(jsonDepth('text', 64), 0)
})

t.test('10,000-level nesting over WebSocket (publish, update, send): invalid_message naming the limit, the connection survives, nothing logged as an error', async t => {
  const built = await build(t)
  const alice = await TestClient.connect(built.wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  t.equal(alice.welcome.limits.jsonMaxDepth, 64, 'welcome.limits names the limit')
  await alice.request({ type: 'join', room: 'r' })

  const frames: Array<[string, string, string]> = [
    ['publish', 'p', `{"type":"publish","room":"r","id":"p","data":${deepArray(LEVELS)}}`],
    ['update', 'u', `{"type":"update","room":"r","id":"u","patch":${deepObject(LEVELS)}}`],
    ['send', 's', `{"type":"send","to":"bob","text":"hi","id":"s","meta":${deepArray(LEVELS)}}`]
  ]
  for (const [type, id, frame] of frames) {
    t.ok(Buffer.byteLength(frame) < 65536, `the ${type} frame fits WS_MAX_PAYLOAD`)
    alice.send(frame)
    const reply = await alice.waitFor(m => m.id === id, `the reply to the deep ${type}`)
    t.match(reply, { type: 'error', code: 'invalid_message', limit: 64 }, `${type}: invalid_message`)
    t.match(reply.message, /nesting deeper than 64 levels \(limit 64\)/, `${type}: the message names the limit (${reply.message})`)
  }
  t.equal((await alice.request({ type: 'ping' })).type, 'pong', 'the connection survives')
  t.ok(alice.open)

  // the limit itself is accepted and applied
  const atLimit = JSON.parse(deepObject(63))
  t.match(await alice.request({ type: 'update', room: 'r', patch: atLimit }), { type: 'ack', version: 1 }, 'a patch 64 levels deep is applied')
  t.match(await alice.request({ type: 'publish', room: 'r', data: JSON.parse(deepArray(64)) }), { type: 'ack', offset: 1 }, 'data 64 levels deep is published')
  t.match(await alice.request({ type: 'publish', room: 'r', data: JSON.parse(deepArray(65)) }), { type: 'error', code: 'invalid_message', message: 'data: nesting deeper than 64 levels (limit 64)' })
  t.same(errorLines(built.logs()), [], 'no error line (and no stack) was logged')
})

t.test('10,000-level nesting over HTTP (send, publish, state patch): 400 naming the limit, never 5xx, nothing logged as an error', async t => {
  const built = await build(t)
  const bodies: Array<[string, string, string, string]> = [
    ['POST', '/api/send', `{"from":"a","to":"b","text":"hi","meta":${deepArray(LEVELS)}}`, 'meta'],
    ['POST', '/api/rooms/r/publish', `{"data":${deepArray(LEVELS)}}`, 'data'],
    ['PATCH', '/api/rooms/r/state', `{"patch":${deepObject(LEVELS)}}`, 'patch'],
    ['PATCH', '/api/v1/rooms/r/state', `{"patch":${deepObject(LEVELS)}}`, 'patch']
  ]
  for (const [method, path, body, field] of bodies) {
    const res = await requestJson(`${built.url}${path}`, method, body)
    t.equal(res.status, 400, `${method} ${path}: 400`)
    t.match(res.body, { statusCode: 400, error: 'Bad Request', code: 'invalid_message', message: `${field}: nesting deeper than 64 levels (limit 64)`, limit: 64 })
  }
  t.equal((await requestJson(`${built.url}/api/rooms/r/state`, 'PATCH', { patch: JSON.parse(deepObject(63)) })).status, 200, 'a patch at the limit is applied')
  t.equal((await requestJson(`${built.url}/health`)).status, 200)
  t.same(errorLines(built.logs()), [], 'no error line (and no stack) was logged')
})

t.test('JSON_MAX_DEPTH is configurable', async t => {
  const built = await build(t, { JSON_MAX_DEPTH: '3' })
  const res = await requestJson(`${built.url}/api/rooms/r/publish`, 'POST', { data: [[[[1]]]] })
  t.match(res, { status: 400, body: { message: 'data: nesting deeper than 3 levels (limit 3)' } })
  t.equal((await requestJson(`${built.url}/api/rooms/r/publish`, 'POST', { data: [[[1]]] })).status, 200)
})
