import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('bad frames get the contract error and the connection stays open', async t => {
  const { wsUrl } = await build(t)
  const c = await TestClient.connect(wsUrl, { clientId: 'tester' })
  t.teardown(() => c.close())

  const cases: Array<[string, string, RegExp?]> = [
    ['{not json', 'invalid_message', /JSON/],
    ['', 'invalid_message'],
    ['[1,2,3]', 'invalid_message', /object/],
    ['"a string"', 'invalid_message'],
    ['null', 'invalid_message'],
    ['{"no":"type"}', 'invalid_message', /type/],
    ['{"type":42}', 'invalid_message', /type/],
    ['{"type":"teleport"}', 'unknown_type', /teleport/],
    ['{"type":"send","to":"bob"}', 'invalid_message', /text/],
    ['{"type":"send","to":"bob","text":""}', 'invalid_message', /text/],
    ['{"type":"send","to":"bob","text":7}', 'invalid_message', /text/],
    ['{"type":"send","to":"","text":"x"}', 'invalid_message', /to/],
    ['{"type":"send","to":"bob","text":"x","__proto__":{"polluted":true}}', 'invalid_message'],
    ['{"type":"send","to":"bob","text":"x","constructor":{"prototype":{"polluted":true}}}', 'invalid_message']
  ]
  for (const [frame, code, message] of cases) {
    c.send(frame)
    const err = await c.next('error')
    t.equal(err.code, code, `${frame || '(empty)'} → ${code}`)
    if (message) t.match(err.message, message)
  }
  c.ws.send(Buffer.from([1, 2, 3]), { binary: true })
  t.match(await c.next('error'), { code: 'invalid_message', message: /binary/ })
  t.equal(({} as any).polluted, undefined, 'no prototype was polluted')

  const pong = await c.request({ type: 'ping' })
  t.equal(pong.type, 'pong', 'the connection still works')
})

t.test('an error answers with the id of the request it refuses', async t => {
  const { wsUrl } = await build(t)
  const c = await TestClient.connect(wsUrl)
  t.teardown(() => c.close())
  c.send({ type: 'send', to: 'x', id: 'abc' })
  t.match(await c.next('error'), { code: 'invalid_message', id: 'abc' })
  c.send({ type: 'unheard-of', id: 7 })
  t.match(await c.next('error'), { code: 'unknown_type', id: 7 })
})

t.test('a frame over WS_MAX_PAYLOAD closes the connection with 1009', async t => {
  const { wsUrl, app } = await build(t, { WS_MAX_PAYLOAD: '1024' })
  const c = await TestClient.connect(wsUrl)
  c.send({ type: 'send', to: 'bob', text: 'x'.repeat(1024) })
  const closed = await c.closed
  t.equal(closed.code, 1009)
  const ok = await TestClient.connect(wsUrl)
  t.teardown(() => ok.close())
  t.equal((await ok.request({ type: 'ping' })).type, 'pong', 'the server is unaffected')
  t.equal(app.sessions.size, 1)
})
