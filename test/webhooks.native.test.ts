import t from 'tap'
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { Webhook } from 'standardwebhooks'
import { build, tempDir, waitFor, type TestContext } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'
import { cluster, connect } from './support/cluster-instances.js'

const SECRET = `whsec_${randomBytes(32).toString('base64')}`

interface Event { type: string, room: string, clientId?: string, [field: string]: unknown }

/**
 * A real webhook receiver: verifies every request with the `standardwebhooks`
 * library, answers 500 to the first `failEach` attempts of each webhook-id,
 * and keeps the events of the requests it accepted (by webhook-id, as a
 * receiver deduplicates).
 */
async function receiver (t: TestContext, failEach = 0) {
  const state = { requests: 0, invalid: 0, failEach, accepted: new Map<string, Event[]>(), statuses: new Map<string, number[]>() }
  const verifier = new Webhook(SECRET)
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      state.requests++
      const body = Buffer.concat(chunks).toString()
      let payload: { type: string, data: { events: Event[] } }
      try {
        payload = verifier.verify(body, req.headers as Record<string, string>) as typeof payload
      } catch {
        state.invalid++
        res.writeHead(401).end()
        return
      }
      const id = String(req.headers['webhook-id'])
      const statuses = state.statuses.get(id) ?? []
      state.statuses.set(id, statuses)
      if (statuses.length < state.failEach) {
        statuses.push(500)
        res.writeHead(500).end('not now')
        return
      }
      statuses.push(204)
      if (payload.type === 'switchboard.events' && !state.accepted.has(id)) state.accepted.set(id, payload.data.events)
      res.writeHead(204).end()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  return { state, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`, events: () => [...state.accepted.values()].flat() }
}

const key = (e: Event) => `${e.type} ${e.room}${e.clientId === undefined ? '' : ` ${e.clientId}`}`

t.test('native rooms fire room_occupied, member_joined, member_left, room_vacated, signed as Standard Webhooks, once each', async t => {
  const hooks = await receiver(t)
  const { wsUrl } = await build(t, { WEBHOOK_URL: hooks.url, WEBHOOK_SECRET: SECRET, WEBHOOK_BATCH_MS: '20' })
  const alice1 = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const alice2 = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  await alice1.request({ type: 'join', room: 'r' })
  await alice2.request({ type: 'join', room: 'r' })
  await bob.request({ type: 'join', room: 'r' })
  await alice1.request({ type: 'leave', room: 'r' })
  await waitFor(() => hooks.events().length >= 3, 'the joins')
  await alice2.close()
  await waitFor(() => hooks.events().some(e => e.type === 'member_left'), 'alice\'s member_left')
  await bob.close()
  await waitFor(() => hooks.events().some(e => e.type === 'room_vacated'), 'room_vacated')

  const events = hooks.events()
  t.same(events.map(key), ['room_occupied r', 'member_joined r alice', 'member_joined r bob', 'member_left r alice', 'member_left r bob', 'room_vacated r'], 'each transition once, in order; a second connection of alice adds nothing')
  for (const e of events) t.match(e, { timestamp: String })
  t.equal(hooks.state.invalid, 0, 'every request verifies with the standardwebhooks library')
})

t.test('a receiver that fails twice gets each batch on the third attempt, same webhook-id; message_published when asked', async t => {
  const hooks = await receiver(t, 2)
  const { wsUrl } = await build(t, { WEBHOOK_URL: hooks.url, WEBHOOK_SECRET: SECRET, WEBHOOK_BATCH_MS: '20', WEBHOOK_EVENTS: 'room_occupied,message_published' })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'news' })
  await alice.request({ type: 'publish', room: 'news', data: { headline: 'hi' } })
  await waitFor(() => hooks.events().length >= 2, 'the delivered batches (after two retries each)', Infinity, 50)
  for (const [id, statuses] of hooks.state.statuses) t.same(statuses, [500, 500, 204], `batch ${id}: two refused attempts, then accepted under the same webhook-id`)
  t.same(hooks.events().map(e => e.type).sort(), ['message_published', 'room_occupied'], 'only the events asked for, once each')
  t.match(hooks.events().find(e => e.type === 'message_published'), { room: 'news', offset: 1, from: 'alice', data: { headline: 'hi' }, messageId: String })
})

t.test('batches not delivered by a shutdown are kept in the store and sent after the restart, under the same webhook-id', async t => {
  const hooks = await receiver(t, Infinity)
  const dataDir = tempDir(t)
  const env = { WEBHOOK_URL: hooks.url, WEBHOOK_SECRET: SECRET, WEBHOOK_BATCH_MS: '20' }
  const first = await build(t, env, { dataDir })
  const alice = await TestClient.connect(first.wsUrl, { clientId: 'alice' })
  await alice.request({ type: 'join', room: 'kept' })
  await waitFor(() => hooks.state.statuses.size > 0, 'a refused attempt')
  await alice.close()
  await first.app.close()
  t.equal(hooks.events().length, 0, 'nothing was accepted before the restart')
  const refused = new Set(hooks.state.statuses.keys())

  hooks.state.failEach = 0
  const second = await build(t, env, { dataDir })
  await waitFor(() => hooks.events().some(e => e.type === 'room_vacated'), 'the kept batches, sent again', Infinity, 50)
  t.same(hooks.events().map(key).sort(), ['member_joined kept alice', 'member_left kept alice', 'room_occupied kept', 'room_vacated kept'], 'every event once')
  for (const id of hooks.state.accepted.keys()) t.ok(refused.has(id), `batch ${id} came under the id it had before the restart`)
  t.ok(second.logs().some(l => l.event === 'webhook.resumed'), 'the restart says it sent them again')
  t.equal(hooks.state.invalid, 0)
})

t.test('with Redis, the batches a stopped instance kept are sent by the next one to look (staleMs)', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const hooks = await receiver(t, Infinity)
  // staleMs 0: the next instance claims them at once (the default, 60 s, leaves a live instance time to finish its retries)
  const webhooks = { url: hooks.url, secret: SECRET, events: new Set(['room_occupied', 'member_joined']), batchMs: 20, staleMs: 0 }
  const first = await build(t, { ...redis.env }, { app: { rooms: { webhooks } } })
  const alice = await TestClient.connect(first.wsUrl, { clientId: 'alice' })
  await alice.request({ type: 'join', room: 'kept' })
  await waitFor(() => hooks.state.statuses.size > 0, 'a refused attempt')
  await alice.close()
  await first.app.close()
  const refused = new Set(hooks.state.statuses.keys())
  hooks.state.failEach = 0
  await build(t, { ...redis.env }, { app: { rooms: { webhooks } } })
  await waitFor(() => hooks.events().length >= 2, 'the kept batch, sent by the next instance', Infinity, 50)
  // the kept batches are sent again side by side, as after a restart on SQLite: their order of arrival is not promised (docs/integration.md)
  t.same(hooks.events().map(key).sort(), ['member_joined kept alice', 'room_occupied kept'], 'every event once')
  for (const id of hooks.state.accepted.keys()) t.ok(refused.has(id), 'under the id it had before')
})

t.test('bad webhook settings stop the start naming them', async t => {
  await t.rejects(build(t, { WEBHOOK_URL: 'http://127.0.0.1:1/h' }), /WEBHOOK_URL needs WEBHOOK_SECRET/)
  await t.rejects(build(t, { WEBHOOK_URL: 'http://127.0.0.1:1/h', WEBHOOK_SECRET: 'whsec_c2hvcnQ=' }), /WEBHOOK_SECRET must hold 24 to 64 bytes once base64-decoded \(got 5\)/)
  await t.rejects(build(t, { WEBHOOK_URL: 'http://127.0.0.1:1/h', WEBHOOK_SECRET: SECRET, WEBHOOK_EVENTS: 'member_joined,room_deleted' }), /WEBHOOK_EVENTS must list some of .* \(got "room_deleted"\)/)
})

t.test('two instances on one Redis: each transition is sent once, by one instance, through a receiver that fails twice', redisTestOptions(), async t => {
  const hooks = await receiver(t, 2)
  const { instances: [a, b] } = await cluster(t, 2, { WEBHOOK_URL: hooks.url, WEBHOOK_SECRET: SECRET, WEBHOOK_BATCH_MS: '20' })
  const xena = await connect(t, a.wsUrl, 'xena')
  const yuri = await connect(t, b.wsUrl, 'yuri')
  const xena2 = await connect(t, b.wsUrl, 'xena')
  await xena.request({ type: 'join', room: 'shared' })
  await yuri.request({ type: 'join', room: 'shared' })
  await xena2.request({ type: 'join', room: 'shared' })
  await xena.request({ type: 'leave', room: 'shared' })
  await xena2.request({ type: 'leave', room: 'shared' })
  await yuri.request({ type: 'leave', room: 'shared' })
  await waitFor(() => hooks.events().some(e => e.type === 'room_vacated'), 'room_vacated', Infinity, 50)
  await waitFor(() => hooks.events().length >= 6, 'every event', Infinity, 50)
  t.same(hooks.events().map(key).sort(), ['member_joined shared xena', 'member_joined shared yuri', 'member_left shared xena', 'member_left shared yuri', 'room_occupied shared', 'room_vacated shared'].sort(), 'each once across both instances')
  t.equal(hooks.state.invalid, 0)
  for (const statuses of hooks.state.statuses.values()) t.same(statuses, [500, 500, 204], 'each batch accepted on its third attempt')
})
