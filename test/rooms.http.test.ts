import t from 'tap'
import { build, requestJson } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('the HTTP room API publishes, patches and describes rooms under /api and /api/v1', async t => {
  const { wsUrl, url } = await build(t)
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())

  for (const prefix of ['/api', '/api/v1']) {
    const room = `room${prefix.replace(/\//g, '-')}`
    const base = `${url}${prefix}/rooms/${room}`
    t.match(await requestJson(base), { status: 404, body: { statusCode: 404, error: 'Not Found', message: /never been used/ } })

    await alice.request({ type: 'join', room })
    t.same((await requestJson(base)).body, { room, state: {}, version: 0, offset: 0, epoch: '', members: ['alice'] }, 'a room with a member exists (never written: no epoch yet)')

    const pub = await requestJson(`${base}/publish`, 'POST', { data: { alert: 'deploy' } })
    t.match(pub, { status: 200, body: { ok: true, offset: 1, messageId: String, delivered: 1 } })
    const first = await alice.next('room_message')
    t.match(first, { room, offset: 1, from: 'server', data: { alert: 'deploy' }, messageId: pub.body.messageId, epoch: /^[0-9a-f]{16}$/ })
    t.match((await requestJson(`${base}/publish`, 'POST', { from: 'backend', data: 7 })).body, { offset: 2 })
    t.match(await alice.next('room_message'), { from: 'backend', data: 7 })

    const patched = await requestJson(`${base}/state`, 'PATCH', { patch: { phase: 'live', count: 1 } })
    t.same(patched, { status: 200, body: { ok: true, version: 1 } })
    t.match(await alice.next('state'), { room, version: 1, patch: { phase: 'live', count: 1 }, from: 'server' })
    t.same((await requestJson(`${base}/state`, 'PATCH', { patch: { count: 2 }, baseVersion: 1 })).body, { ok: true, version: 2 })

    const conflict = await requestJson(`${base}/state`, 'PATCH', { patch: { count: 9 }, baseVersion: 1 })
    t.match(conflict, { status: 409, body: { statusCode: 409, error: 'Conflict', code: 'version_conflict', currentVersion: 2 } })

    t.same((await requestJson(base)).body, { room, state: { phase: 'live', count: 2 }, version: 2, offset: 2, epoch: first.epoch, members: ['alice'] })
    const list = await requestJson(`${url}${prefix}/rooms`)
    t.equal(list.status, 200)
    t.same(list.body.rooms.find((r: any) => r.room === room), { room, members: 1, version: 2 })
  }
})

t.test('the HTTP room API refuses bad input with clear 4xx errors and changes nothing', async t => {
  const { url } = await build(t, { ROOM_STATE_MAX_BYTES: '100', WS_MAX_PAYLOAD: '1024' })
  const base = `${url}/api/rooms/r`
  await requestJson(`${base}/state`, 'PATCH', { patch: { a: 1 } })
  const { epoch } = (await requestJson(base)).body

  t.match(await requestJson(`${url}/api/rooms/bad%20name`), { status: 400, body: { message: /room/ } })
  t.match(await requestJson(`${url}/api/rooms/bad%20name/publish`, 'POST', { data: 1 }), { status: 400 })
  for (const patch of [[1], 'x', 3, null]) {
    t.match(await requestJson(`${base}/state`, 'PATCH', { patch }), { status: 400, body: { message: /patch/ } }, `patch ${JSON.stringify(patch)}`)
  }
  t.match(await requestJson(`${base}/state`, 'PATCH', { patch: { big: 'x'.repeat(200) } }), { status: 413, body: { code: 'state_too_large', maxBytes: 100 } })
  t.match(await requestJson(`${base}/state`, 'PATCH', { patch: { nested: { constructor: { x: 1 } } } }), { status: 400, body: { code: 'invalid_message', message: /constructor/ } })
  t.match(await requestJson(`${base}/state`, 'PATCH', '{"patch":{"__proto__":{"x":1}}}'), { status: 400 })
  t.match(await requestJson(`${base}/state`, 'PATCH', '{"patch":'), { status: 400 })
  t.match(await requestJson(`${base}/publish`, 'POST', {}), { status: 400, body: { message: /data/ } })
  t.match(await requestJson(`${base}/publish`, 'POST', { data: 'x'.repeat(2000) }), { status: 413, body: { message: /WS_MAX_PAYLOAD/ } })
  t.match(await requestJson(`${base}/publish`, 'POST', { from: 'not valid!', data: 1 }), { status: 400 })

  t.same((await requestJson(base)).body, { room: 'r', state: { a: 1 }, version: 1, offset: 0, epoch, members: [] }, 'nothing changed')
})
