import t from 'tap'
import { build, requestJson, waitFor, type Built, type TestContext } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'

async function connect (t: TestContext, wsUrl: string, clientId: string): Promise<TestClient> {
  const client = await TestClient.connect(wsUrl, { clientId })
  t.teardown(() => client.close())
  return client
}

async function twoInstances (t: TestContext, extra: Record<string, string> = {}): Promise<{ a: Built, b: Built, cli: (...args: string[]) => string }> {
  const redis = await startRedis(t)
  const env = { ...redis.env, RATE_LIMIT_MAX: '1000', ...extra }
  const a = await build(t, env)
  const b = await build(t, env)
  return { a, b, cli: redis.cli }
}

t.test('two instances on one Redis', redisTestOptions(), async t => {
  const { a, b } = await twoInstances(t)

  t.test('clients on different instances see each other in a room', async t => {
    const alice = await connect(t, a.wsUrl, 'alice')
    const bob = await connect(t, b.wsUrl, 'bob')
    t.not(alice.welcome.serverId, bob.welcome.serverId, 'they are on different instances')

    t.match(await alice.request({ type: 'join', room: 'lobby' }), { type: 'joined', members: ['alice'] })
    const joined = await bob.request({ type: 'join', room: 'lobby' })
    t.same(joined.members.sort(), ['alice', 'bob'], 'bob sees alice, who is on the other instance')
    t.match(await alice.next('presence'), { room: 'lobby', event: 'join', clientId: 'bob' }, 'alice sees bob join')

    const view = await requestJson(`${a.url}/api/rooms/lobby`)
    t.same(view.body.members.sort(), ['alice', 'bob'], 'the HTTP API lists members of both instances')

    const ack = await bob.request({ type: 'publish', room: 'lobby', data: { text: 'hi from B' } })
    t.match(ack, { type: 'ack', room: 'lobby', offset: 1 })
    t.match(await alice.next('room_message'), { room: 'lobby', offset: 1, from: 'bob', data: { text: 'hi from B' } })
    t.match(await bob.next('room_message'), { offset: 1 }, 'the sender gets its own message once')

    t.match(await alice.request({ type: 'update', room: 'lobby', patch: { topic: 'redis' } }), { type: 'ack', version: 1 })
    t.match(await bob.next('state'), { room: 'lobby', version: 1, patch: { topic: 'redis' }, from: 'alice' })

    const published = await requestJson(`${b.url}/api/rooms/lobby/publish`, 'POST', { data: 'from HTTP on B' })
    t.equal(published.status, 200)
    t.match(await alice.next('room_message'), { offset: 2, data: 'from HTTP on B' })

    await bob.next('room_message')
    await bob.request({ type: 'leave', room: 'lobby' })
    t.match(await alice.next('presence'), { event: 'leave', clientId: 'bob' }, 'alice sees bob leave')
    const after = await requestJson(`${a.url}/api/rooms/lobby`)
    t.same(after.body.members, ['alice'])
    await alice.request({ type: 'publish', room: 'lobby', data: 'bob is gone' })
    await alice.next('room_message')
    await new Promise(resolve => setTimeout(resolve, 100))
    t.equal(bob.all('room_message').length, 2, 'bob saw no room message after leaving')
  })

  t.test('a direct message reaches a client on the other instance', async t => {
    const carol = await connect(t, a.wsUrl, 'carol')
    const dave = await connect(t, b.wsUrl, 'dave')
    const dave2 = await connect(t, a.wsUrl, 'dave')

    const ack = await carol.request({ type: 'send', to: 'dave', text: 'hello dave' })
    t.match(ack, { type: 'ack', delivered: 2, queued: false }, 'delivered counts connections on both instances')
    t.match(await dave.next('message'), { from: 'carol', to: 'dave', text: 'hello dave' })
    t.match(await dave2.next('message'), { text: 'hello dave' })

    await dave2.close()
    const sent = await requestJson(`${a.url}/api/send`, 'POST', { from: 'ops', to: 'dave', text: 'over HTTP' })
    t.match(sent, { status: 200, body: { ok: true, delivered: 1, queued: false } })
    t.match(await dave.next('message'), { from: 'ops', text: 'over HTTP' })
  })

  t.test('a message queued for an offline client is delivered on whichever instance it reconnects to', async t => {
    const sent = await requestJson(`${a.url}/api/send`, 'POST', { from: 'ops', to: 'erin', text: 'while you were away' })
    t.match(sent.body, { ok: true, delivered: 0, queued: true })
    const erin = await connect(t, b.wsUrl, 'erin')
    t.match(await erin.next('message'), { from: 'ops', to: 'erin', text: 'while you were away' })
    await erin.close()
    const again = await connect(t, a.wsUrl, 'erin')
    await new Promise(resolve => setTimeout(resolve, 200))
    t.equal(again.all('message').length, 0, 'delivered once, not again on the next connection')
  })

  t.test('an instance with no member in a room receives no pub/sub traffic for it', async t => {
    const frank = await connect(t, a.wsUrl, 'frank')
    const gina = await connect(t, a.wsUrl, 'gina')
    await frank.request({ type: 'join', room: 'only-on-a' })
    await gina.request({ type: 'join', room: 'only-on-a' })
    const before = b.app.broker.received
    for (let i = 0; i < 20; i++) await frank.request({ type: 'publish', room: 'only-on-a', data: i })
    await frank.request({ type: 'update', room: 'only-on-a', patch: { n: 1 } })
    await waitFor(() => gina.all('room_message').length === 20, 'gina gets all 20 messages')
    t.equal(b.app.broker.received, before, 'instance B received nothing')
    t.notOk(b.app.broker.channels.some(c => c.includes('only-on-a')), 'B holds no subscription for the room')
    t.ok(a.app.broker.channels.includes('room:only-on-a'), 'A holds one')

    await frank.request({ type: 'leave', room: 'only-on-a' })
    t.ok(a.app.broker.channels.includes('room:only-on-a'), 'still held while gina is in the room')
    await gina.request({ type: 'leave', room: 'only-on-a' })
    t.notOk(a.app.broker.channels.includes('room:only-on-a'), 'unsubscribed when the last local member left')
    await gina.close()
  })
})

t.test('2 x 500 concurrent updates and publishes to one room through two instances lose nothing', redisTestOptions(), async t => {
  const { a, b } = await twoInstances(t, { WS_MESSAGES_PER_SECOND: '100000' })
  const clientA = await connect(t, a.wsUrl, 'writer-a')
  const clientB = await connect(t, b.wsUrl, 'writer-b')
  await clientA.request({ type: 'join', room: 'busy' })
  await clientB.request({ type: 'join', room: 'busy' })

  const N = 500
  // `unavailable` is the one refusal a client retries ("retry later"): on a loaded
  // machine a Redis command can outlast its 5 s timeout in this burst of 2,000
  // fsynced writes. A refused write was not applied, so its retry must not
  // duplicate it: the offsets and versions below are still 1..1000, each once.
  let retried = 0
  const requestUntilCommitted = async (client: TestClient, msg: Record<string, unknown>): Promise<Record<string, any>> => {
    for (;;) {
      const reply = await client.request(msg)
      if (reply.type !== 'error' || reply.code !== 'unavailable') return reply
      retried++
    }
  }
  const sendAll = async (client: TestClient, tag: string) => {
    const acks: Array<Promise<Record<string, any>>> = []
    for (let i = 0; i < N; i++) {
      acks.push(requestUntilCommitted(client, { type: 'update', room: 'busy', patch: { [`${tag}${i}`]: i } }))
      acks.push(requestUntilCommitted(client, { type: 'publish', room: 'busy', data: `${tag}${i}` }))
    }
    return Promise.all(acks)
  }
  const [acksA, acksB] = await Promise.all([sendAll(clientA, 'a'), sendAll(clientB, 'b')])
  const all = [...acksA, ...acksB]
  t.same(all.filter(r => r.type === 'error'), [], 'no request failed')
  if (retried > 0) t.comment(`${retried} request(s) answered unavailable (Redis command timeout under load) and retried`)
  const versions = all.filter(r => r.version !== undefined).map(r => r.version).sort((x, y) => x - y)
  const offsets = all.filter(r => r.offset !== undefined).map(r => r.offset).sort((x, y) => x - y)
  t.same(versions, Array.from({ length: 2 * N }, (_, i) => i + 1), 'versions 1..1000, each once')
  t.same(offsets, Array.from({ length: 2 * N }, (_, i) => i + 1), 'offsets 1..1000, each once')

  const room = await requestJson(`${b.url}/api/rooms/busy`)
  t.equal(room.body.version, 2 * N, 'final version is 1,000')
  t.equal(room.body.offset, 2 * N)
  t.equal(Object.keys(room.body.state).length, 2 * N, 'every patch is in the state')
  t.equal(room.body.state.a499, 499)
  t.equal(room.body.state.b0, 0)

  for (const client of [clientA, clientB]) {
    await waitFor(() => client.all('state').length === 2 * N && client.all('room_message').length === 2 * N, 'every broadcast', 20000)
    t.same(client.all('state').map(m => m.version).sort((x, y) => x - y), versions, 'each member saw every state change of both instances')
  }
})
