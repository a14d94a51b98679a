import t from 'tap'
import { createSigner } from 'fast-jwt'
import { build, waitFor } from './support/helper.js'
import { TestClient, type Msg } from './support/ws-client.js'
import { SwitchboardClient, type RoomMessage } from '../client/index.js'

const SECRET = 'refresh-test-secret-that-is-long-enough-0123456789'
const sign = (claims: Record<string, unknown>, key = SECRET) => createSigner({ key, algorithm: 'HS256' })(claims)
const now = () => Math.floor(Date.now() / 1000)
const iso = (exp: number) => new Date(exp * 1000).toISOString()
const env = { AUTH_SECRET: SECRET, RATE_LIMIT_MAX: '1000' }

/** Publishes to `room` one message after another (about 50 a second, under the message rate) until stopped; resolves with the last offset acknowledged. */
function publisher (client: TestClient, room: string) {
  const state = { stopped: false }
  let last = 0
  const done = (async () => {
    while (!state.stopped && client.open) {
      const ack = await client.request({ type: 'publish', room, data: { n: last + 1 } })
      if (ack.type !== 'ack') throw new Error(`publish refused: ${JSON.stringify(ack)}`)
      last = ack.offset
      // pacing only (WS_MESSAGES_PER_SECOND): nothing waits on this for an outcome
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    return last
  })()
  return { get last () { return last }, stop: async () => { state.stopped = true; return await done } }
}

const offsetsIn = (received: Msg[], room: string) => received.filter(m => m.type === 'room_message' && m.room === room).map(m => m.offset as number)
const upTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1)

t.test('refresh across an expiry: warned, acked, narrower rooms left with a presence leave, no message lost, no reconnect', async t => {
  const { wsUrl, logs } = await build(t, env)
  const exp = now() + 6
  const alice = await TestClient.connect(wsUrl, { token: sign({ sub: 'alice', exp, rooms: ['lobby', 'team-*'] }) })
  // carol's token expires with alice's first one and is never refreshed: her close says that moment has passed
  const carol = await TestClient.connect(wsUrl, { token: sign({ sub: 'carol', exp, rooms: ['lobby'] }) })
  const bob = await TestClient.connect(wsUrl, { token: sign({ sub: 'bob', exp: now() + 600 }) })
  t.teardown(async () => { await alice.close(); await bob.close(); await carol.close() })
  t.equal(alice.welcome.tokenExpiresAt, iso(exp), 'welcome says when the token expires')

  for (const room of ['lobby', 'team-a']) {
    t.equal((await alice.request({ type: 'join', room })).type, 'joined')
    t.equal((await bob.request({ type: 'join', room })).type, 'joined')
  }
  const pub = publisher(bob, 'lobby')

  const warning = await alice.next('token_expiring')
  t.equal(warning.expiresAt, iso(exp), 'token_expiring names the expiry')
  t.ok(warning.inMs > 0 && warning.inMs <= 6000, `it comes before the expiry (${warning.inMs} ms left)`)

  const newExp = now() + 600
  const ack = await alice.request({ type: 'refresh', token: sign({ sub: 'alice', exp: newExp, rooms: ['lobby'] }) })
  t.same({ type: ack.type, expiresAt: ack.expiresAt }, { type: 'ack', expiresAt: iso(newExp) }, 'refresh is acked with the new expiry')
  t.match(await alice.waitFor(m => m.type === 'left' && m.id === undefined, 'the room the new claims forbid to be left'), { room: 'team-a', reason: 'token_refreshed' })
  t.match(await bob.waitFor(m => m.type === 'presence' && m.room === 'team-a' && m.event === 'leave', 'a presence leave'), { clientId: 'alice' }, 'its other members see alice leave')
  t.match(await alice.request({ type: 'join', room: 'team-a' }), { type: 'error', code: 'forbidden' }, 'and it cannot be joined again')

  t.match(await carol.closed, { code: 1008, reason: 'token expired' }, 'the old expiry has passed (an unrefreshed connection of the same exp is closed)')
  t.ok(alice.open, 'alice is still connected')
  t.equal((await alice.request({ type: 'ping' })).type, 'pong')
  t.ok(pub.last > 0, `bob published all along (${pub.last} messages so far)`)

  const last = await pub.stop()
  await alice.waitFor(m => m.type === 'room_message' && m.room === 'lobby' && m.offset === last, 'the last message')
  t.same(offsetsIn(alice.received, 'lobby'), upTo(last), `alice got every lobby message, in order (${last})`)
  t.equal(alice.all('welcome').length, 1, 'on one connection (one welcome)')
  t.ok(logs().some(l => l.event === 'auth.token_refreshed' && l.clientId === 'alice'), 'the refresh is logged')
  t.notOk(logs().some(l => l.event === 'auth.token_expired' && l.clientId === 'alice'), 'alice never expired')
})

t.test('a refused refresh names why and changes nothing', async t => {
  const { wsUrl, rawLogs } = await build(t, env)
  const exp = now() + 600
  const alice = await TestClient.connect(wsUrl, { token: sign({ sub: 'alice', exp }) })
  t.teardown(() => alice.close())
  const expired = sign({ sub: 'alice', exp: now() - 60 })
  t.match(await alice.request({ type: 'refresh', token: expired }), { type: 'error', code: 'unauthorized', reason: 'expired', message: /refresh: token expired; the connection keeps its current token/ })
  t.match(await alice.request({ type: 'refresh', token: sign({ sub: 'alice' }, 'another-secret-that-is-long-enough') }), { type: 'error', code: 'unauthorized', reason: 'invalid' })
  t.match(await alice.request({ type: 'refresh', token: 'not-a-token' }), { type: 'error', code: 'unauthorized', reason: 'malformed' })
  t.match(await alice.request({ type: 'refresh', token: sign({ sub: 'mallory', exp }) }), { type: 'error', code: 'forbidden', message: /sub must be this connection's client id alice/ })
  t.match(await alice.request({ type: 'refresh' }), { type: 'error', code: 'invalid_message', message: /token/ })
  t.ok(alice.open, 'the connection stays')
  t.equal((await alice.request({ type: 'ping' })).type, 'pong')
  t.notOk(rawLogs().includes(expired), 'the refused token is not logged')
  // without exp: the connection no longer expires
  t.same((await alice.request({ type: 'refresh', token: sign({ sub: 'alice' }) })).expiresAt, null)
})

t.test('the TypeScript client refreshes with getToken across an expiry: no reconnect, no message lost', async t => {
  const { url, wsUrl } = await build(t, env)
  const exp = now() + 6
  let fetched = 0
  const client = new SwitchboardClient({
    url,
    token: sign({ sub: 'dana', exp, rooms: ['lobby'] }),
    getToken: async () => {
      fetched++
      return sign({ sub: 'dana', exp: now() + 600, rooms: ['lobby'] })
    }
  })
  t.teardown(() => client.close())
  const events: string[] = []
  client.on('reconnecting', () => events.push('reconnecting'))
  client.on('close', () => events.push('close'))
  client.on('error', err => events.push(`error ${err.code}`))
  const refreshed = new Promise<{ expiresAt: string | null }>(resolve => client.on('token_refreshed', e => resolve(e)))
  await client.connect()
  const room = await client.join('lobby')
  const got: number[] = []
  room.on('message', (m: RoomMessage) => got.push(m.offset))

  const control = await TestClient.connect(wsUrl, { token: sign({ sub: 'carol', exp }) })
  const bob = await TestClient.connect(wsUrl, { token: sign({ sub: 'bob', exp: now() + 600 }) })
  t.teardown(async () => { await bob.close(); await control.close() })
  t.equal((await bob.request({ type: 'join', room: 'lobby' })).type, 'joined')
  const pub = publisher(bob, 'lobby')

  const { expiresAt } = await refreshed
  t.ok(expiresAt !== null && Date.parse(expiresAt) > (exp + 60) * 1000, 'the client refreshed by itself, to the new expiry')
  t.match(await control.closed, { code: 1008 }, 'the first token\'s expiry has passed')
  const last = await pub.stop()
  await waitFor(() => got.includes(last), 'the last message')
  t.same(got, upTo(last), `every message arrived once, in order (${last})`)
  t.equal(fetched, 1, 'getToken was called once')
  t.same(events, [], 'no close, no reconnect, no error')
  t.ok(client.connected)
})

t.test('the TypeScript client: getToken gives the first token; refresh() on demand leaves the rooms the new token forbids', async t => {
  const { url } = await build(t, env)
  const client = new SwitchboardClient({ url, getToken: () => sign({ sub: 'erin', exp: now() + 600, rooms: ['a', 'b'] }) })
  t.teardown(() => client.close())
  const welcome = await client.connect()
  t.equal(welcome.clientId, 'erin', 'connected with the token getToken gave')
  t.ok(welcome.tokenExpiresAt !== undefined, 'and welcome says when it expires')
  const a = await client.join('a')
  const b = await client.join('b')
  const left = new Promise<{ room: string, error?: Error }>(resolve => b.on('left', e => resolve(e)))
  const ack = await client.refresh(sign({ sub: 'erin', rooms: ['a'] }))
  t.equal(ack.expiresAt, null, 'a token without exp: the connection no longer expires')
  const gone = await left
  t.match(gone, { room: 'b', error: { code: 'forbidden' } }, 'room b is left, with a forbidden error')
  t.notOk(client.joinedRooms.has('b'))
  t.ok(client.joinedRooms.has('a'), 'room a stays')
  t.match(await a.publish({ still: 'here' }), { room: 'a', offset: 1 }, 'and works')
  const refused = await client.refresh(sign({ sub: 'mallory' })).catch(err => err)
  t.match(refused, { code: 'forbidden' }, 'a token for another sub is refused')
})
