import t from 'tap'
import { build, requestJson, tempDir, type TestContext } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { haveRedis, redisTestOptions, startRedis } from './support/redis-server.js'
import { cluster, connect } from './support/cluster-instances.js'
import { startServer } from './support/process.js'
import { SqliteStore } from '../plugins/store/index.js'

/** The same behaviour on both stores: SQLite in a temp directory, and a private redis-server. */
const stores: Array<{ name: string, env: (t: TestContext) => Promise<Record<string, string>>, opts: { skip?: string } }> = [
  { name: 'SQLite', env: async () => ({}), opts: {} },
  { name: 'Redis', env: async t => (await startRedis(t)).env, opts: redisTestOptions() }
]

async function client (t: TestContext, wsUrl: string, clientId: string): Promise<TestClient> {
  const c = await TestClient.connect(wsUrl, { clientId })
  t.teardown(() => c.close())
  return c
}

/** Every message the room's history holds, as a fresh member recovering from offset 0 sees it. */
async function history (t: TestContext, wsUrl: string, room: string): Promise<any[]> {
  const reader = await client(t, wsUrl, `reader-${Math.random().toString(36).slice(2)}`)
  const joined = await reader.request({ type: 'join', room, since: 0 })
  await reader.close()
  return joined.missed
}

for (const store of stores) {
  t.test(`${store.name}: WebSocket writes with an idempotencyKey are applied once`, store.opts, async t => {
    const env = { WS_MESSAGES_PER_SECOND: '1000', ...await store.env(t) }
    const built = await build(t, env)
    const alice = await client(t, built.wsUrl, 'alice')
    const bob = await client(t, built.wsUrl, 'bob')
    await alice.request({ type: 'join', room: 'idem' })
    await bob.request({ type: 'join', room: 'idem' })

    t.test('the same key twice on one connection', async t => {
      const first = await alice.request({ type: 'publish', room: 'idem', data: { n: 1 }, idempotencyKey: 'k-1' })
      t.match(first, { type: 'ack', room: 'idem', offset: 1 })
      t.notOk('duplicate' in first, 'the first reply is not marked duplicate')
      const again = await alice.request({ type: 'publish', room: 'idem', data: { n: 1 }, idempotencyKey: 'k-1' })
      t.same(again, { ...first, id: again.id, duplicate: true }, 'the repeat gets the original reply (offset, messageId) plus duplicate: true')
      t.same((await history(t, built.wsUrl, 'idem')).map(m => m.data), [{ n: 1 }], 'the room has one message')
      await new Promise(resolve => setTimeout(resolve, 100))
      t.equal(bob.all('room_message').length, 1, 'members got it once')
    })

    t.test('across a reconnect, with the keys of the body in another order', async t => {
      const first = await alice.request({ type: 'publish', room: 'idem', data: { a: 1, b: 2 }, idempotencyKey: 'k-2' })
      const again = await client(t, built.wsUrl, 'alice')
      await again.request({ type: 'join', room: 'idem' })
      const repeat = await again.request({ type: 'publish', idempotencyKey: 'k-2', data: { b: 2, a: 1 }, room: 'idem' })
      t.match(repeat, { offset: first.offset, messageId: first.messageId, duplicate: true })
      t.equal((await history(t, built.wsUrl, 'idem')).length, 2)
    })

    t.test('a key with a different body', async t => {
      const conflict = await alice.request({ type: 'publish', room: 'idem', data: { n: 'other' }, idempotencyKey: 'k-1' })
      t.match(conflict, { type: 'error', code: 'idempotency_conflict', message: /idempotencyKey: "k-1" was already used/ })
      t.equal((await history(t, built.wsUrl, 'idem')).length, 2, 'nothing was published')
      const elsewhere = await alice.request({ type: 'update', room: 'idem', patch: { x: 1 }, idempotencyKey: 'k-1' })
      t.match(elsewhere, { code: 'idempotency_conflict' }, 'one key space per client id across frame types')
    })

    t.test('keys belong to a client id', async t => {
      const carol = await client(t, built.wsUrl, 'carol')
      await carol.request({ type: 'join', room: 'idem' })
      const own = await carol.request({ type: 'publish', room: 'idem', data: { n: 1 }, idempotencyKey: 'k-1' })
      t.match(own, { type: 'ack', offset: 3 })
      t.notOk(own.duplicate, 'another client\'s k-1 is its own write')
    })

    t.test('concurrent repeats on one connection wait for the first', async t => {
      const ids = ['c1', 'c2', 'c3']
      for (const id of ids) alice.send({ type: 'publish', room: 'idem', data: 'same', idempotencyKey: 'k-concurrent', id })
      const replies = await Promise.all(ids.map(id => alice.waitFor(m => m.id === id, id, 5000, true)))
      t.equal(new Set(replies.map(r => r.offset)).size, 1, 'one offset for all three')
      t.same(replies.map(r => r.duplicate === true), [false, true, true])
      t.equal((await history(t, built.wsUrl, 'idem')).filter(m => m.data === 'same').length, 1)
    })

    t.test('update: the repeat gets the original version, even once its baseVersion is behind', async t => {
      const first = await alice.request({ type: 'update', room: 'idem', patch: { count: 1 }, baseVersion: 0, idempotencyKey: 'u-1' })
      t.match(first, { type: 'ack', version: 1 })
      await alice.request({ type: 'update', room: 'idem', patch: { other: true } })
      const repeat = await alice.request({ type: 'update', room: 'idem', patch: { count: 1 }, baseVersion: 0, idempotencyKey: 'u-1' })
      t.match(repeat, { type: 'ack', version: 1, duplicate: true }, 'not version_conflict: it was applied')
      t.match((await requestJson(`${built.url}/api/rooms/idem`)).body, { version: 2 }, 'applied once')
    })

    t.test('send: queued once for an offline recipient, delivered once to an online one', async t => {
      const queued = await alice.request({ type: 'send', to: 'dave', text: 'hi', idempotencyKey: 's-1' })
      t.match(queued, { queued: true, delivered: 0 })
      t.match(await alice.request({ type: 'send', to: 'dave', text: 'hi', idempotencyKey: 's-1' }), { messageId: queued.messageId, queued: true, duplicate: true })
      const live = await alice.request({ type: 'send', to: 'bob', text: 'yo', idempotencyKey: 's-2' })
      t.match(await alice.request({ type: 'send', to: 'bob', text: 'yo', idempotencyKey: 's-2' }), { messageId: live.messageId, delivered: 1, duplicate: true })
      const dave = await client(t, built.wsUrl, 'dave')
      await dave.next('message')
      await new Promise(resolve => setTimeout(resolve, 100))
      t.equal(dave.all('message').length, 1, 'dave finds one queued message')
      t.equal(bob.all('message').length, 1, 'bob got one message')
    })

    t.test('the key is validated', async t => {
      t.match(await alice.request({ type: 'publish', room: 'idem', data: 1, idempotencyKey: 'x'.repeat(129) }), { code: 'invalid_message', message: /idempotencyKey/ })
      t.match(await alice.request({ type: 'publish', room: 'idem', data: 1, idempotencyKey: '' }), { code: 'invalid_message', message: /idempotencyKey/ })
      t.match(await alice.request({ type: 'send', to: 'bob', text: 'x', idempotencyKey: 7 }), { code: 'invalid_message', message: /idempotencyKey/ })
      t.ok(alice.open, 'the connection stays open')
      t.match(alice.welcome.limits, { idempotencyKeyMaxLength: 128, idempotencyTtlMs: 600000, idempotencyMaxKeys: 1000 }, 'welcome names the limits')
    })
  })

  t.test(`${store.name}: keys expire after IDEMPOTENCY_TTL_MS and are capped per client id`, store.opts, async t => {
    const built = await build(t, { IDEMPOTENCY_TTL_MS: '400', IDEMPOTENCY_MAX_KEYS: '3', WS_MESSAGES_PER_SECOND: '1000', ...await store.env(t) })
    const alice = await client(t, built.wsUrl, 'alice')
    await alice.request({ type: 'join', room: 'ttl' })
    const first = await alice.request({ type: 'publish', room: 'ttl', data: 'x', idempotencyKey: 'old' })
    t.match(await alice.request({ type: 'publish', room: 'ttl', data: 'x', idempotencyKey: 'old' }), { duplicate: true })
    await new Promise(resolve => setTimeout(resolve, 500))
    const later = await alice.request({ type: 'publish', room: 'ttl', data: 'x', idempotencyKey: 'old' })
    t.notOk(later.duplicate, 'an expired key is a new write')
    t.equal(later.offset, first.offset + 1)

    for (const key of ['a', 'b', 'c', 'd']) await alice.request({ type: 'publish', room: 'ttl', data: key, idempotencyKey: key })
    t.match(await alice.request({ type: 'publish', room: 'ttl', data: 'd', idempotencyKey: 'd' }), { duplicate: true }, 'the newest keys are kept')
    t.notOk((await alice.request({ type: 'publish', room: 'ttl', data: 'a', idempotencyKey: 'a' })).duplicate, 'past the cap of 3 the oldest went first')
  })

  t.test(`${store.name}: HTTP Idempotency-Key`, store.opts, async t => {
    const built = await build(t, { RATE_LIMIT_MAX: '1000', ...await store.env(t) })
    const post = async (path: string, body: unknown, key?: string, method = 'POST') => {
      const res = await fetch(`${built.url}${path}`, { method, headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) }, body: JSON.stringify(body) })
      return { status: res.status, body: await res.json() as any, replayed: res.headers.get('idempotent-replayed') }
    }
    const watcher = await client(t, built.wsUrl, 'watcher')
    await watcher.request({ type: 'join', room: 'h' })

    const published = await post('/api/rooms/h/publish', { data: { n: 1 } }, 'p-1')
    t.match(published, { status: 200, body: { ok: true, offset: 1, delivered: 1 }, replayed: null })
    const replay = await post('/api/rooms/h/publish', { data: { n: 1 } }, 'p-1')
    t.same([replay.status, replay.body, replay.replayed], [200, published.body, 'true'], 'the replay has the original status and body')
    t.same((await history(t, built.wsUrl, 'h')).map(m => m.data), [{ n: 1 }], 'published once')
    t.match(await post('/api/rooms/h/publish', { data: { n: 2 } }, 'p-1'), { status: 422, body: { code: 'idempotency_conflict' } })
    t.match(await post('/api/rooms/h/publish', { data: { n: 2 } }, '"p-1"'), { status: 422 }, 'a quoted key (Structured Field string) is the same key')

    const patched = await post('/api/rooms/h/state', { patch: { a: 1 }, baseVersion: 0 }, 'st-1', 'PATCH')
    t.match(patched, { status: 200, body: { ok: true, version: 1 } })
    t.same((await post('/api/rooms/h/state', { patch: { a: 1 }, baseVersion: 0 }, 'st-1', 'PATCH')).body, patched.body, 'PATCH replays its body, not a version_conflict')

    const sent = await post('/api/send', { from: 'ci', to: 'nobody', text: 'x' }, 'm-1')
    t.match(sent, { status: 200, body: { ok: true, queued: true } })
    t.same((await post('/api/send', { from: 'ci', to: 'nobody', text: 'x' }, 'm-1')).body, sent.body)

    t.match(await post('/api/send', { from: 'ci', to: 'nobody', text: 'x' }, 'k'.repeat(129)), { status: 400, body: { code: 'invalid_message', message: /Idempotency-Key: must be 1-128 characters/ } })
    const withoutKey = await post('/api/rooms/h/publish', { data: { n: 1 } })
    t.match(withoutKey, { status: 200, body: { offset: 2 } }, 'without a key nothing changes')
  })
}

for (const store of stores) {
  t.test(`${store.name}: a client's WebSocket frames and its HTTP writes share its keys`, store.opts, async t => {
    const built = await build(t, { RATE_LIMIT_MAX: '1000', WS_MESSAGES_PER_SECOND: '1000', ...await store.env(t) })
    const write = async (path: string, body: unknown, key: string, method = 'POST') => {
      const res = await fetch(`${built.url}${path}`, { method, headers: { 'content-type': 'application/json', 'idempotency-key': key }, body: JSON.stringify(body) })
      return { status: res.status, body: await res.json() as any, replayed: res.headers.get('idempotent-replayed') }
    }
    const alice = await client(t, built.wsUrl, 'alice')
    const bob = await client(t, built.wsUrl, 'bob')
    await alice.request({ type: 'join', room: 'both' })

    // a frame whose reply was lost, sent again over HTTP (as a client that fell back to the stream does)
    const frame = await alice.request({ type: 'publish', room: 'both', data: { n: 1 }, idempotencyKey: 'c-1' })
    const resent = await write('/api/rooms/both/publish', { from: 'alice', data: { n: 1 } }, 'c-1')
    t.match(resent, { status: 200, body: { ok: true, offset: frame.offset, messageId: frame.messageId }, replayed: 'true' }, 'the HTTP resend of a frame is a replay')
    // and the other way
    const posted = await write('/api/rooms/both/publish', { from: 'alice', data: { n: 2 } }, 'c-2')
    t.match(posted, { status: 200, body: { offset: frame.offset + 1 }, replayed: null })
    const again = await alice.request({ type: 'publish', room: 'both', data: { n: 2 }, idempotencyKey: 'c-2' })
    t.match(again, { type: 'ack', offset: posted.body.offset, messageId: posted.body.messageId, duplicate: true }, 'the frame resend of an HTTP write is a replay')
    t.match(await write('/api/rooms/both/publish', { from: 'alice', data: { n: 2 } }, 'c-2'), { body: { delivered: posted.body.delivered }, replayed: 'true' }, 'an HTTP replay keeps its delivered count')
    t.same((await history(t, built.wsUrl, 'both')).map(m => m.data), [{ n: 1 }, { n: 2 }], 'each write reached the room once')
    t.match(await alice.request({ type: 'publish', room: 'both', data: { n: 3 }, idempotencyKey: 'c-2' }), { type: 'error', code: 'idempotency_conflict' }, 'another body under the key is a conflict, whichever transport made it')

    const update = await alice.request({ type: 'update', room: 'both', patch: { a: 1 }, idempotencyKey: 'u-1' })
    t.match(await write('/api/rooms/both/state', { from: 'alice', patch: { a: 1 } }, 'u-1', 'PATCH'), { status: 200, body: { ok: true, version: update.version }, replayed: 'true' }, 'a state update too')
    const sent = await write('/api/send', { from: 'alice', to: 'bob', text: 'hi' }, 's-1')
    t.match(sent, { status: 200, body: { ok: true, delivered: 1, queued: false } })
    t.match(await alice.request({ type: 'send', to: 'bob', text: 'hi', idempotencyKey: 's-1' }), { type: 'ack', messageId: sent.body.messageId, duplicate: true }, 'and a direct message')
    await bob.request({ type: 'ping' })
    t.equal(bob.all('message').length, 1, 'bob got it once')

    // keys stay apart where the writer is someone else
    t.match(await write('/api/rooms/both/publish', { data: { n: 1 } }, 'c-1'), { status: 200, replayed: null }, 'a write made as the server has its own keys')
    t.match(await write('/api/rooms/both/publish', { from: 'carol', data: { n: 1 } }, 'c-1'), { status: 200, replayed: null }, 'and so has each other client')
  })
}

t.test('auth mode: a user token\'s HTTP writes share the keys of its sub\'s frames', async t => {
  const secret = 'idempotency-test-secret-0123456789abcdef'
  const { createSigner } = await import('fast-jwt')
  const sign = createSigner({ key: secret, algorithm: 'HS256' })
  const built = await build(t, { RATE_LIMIT_MAX: '1000', AUTH_SECRET: secret })
  const token = sign({ sub: 'alice' })
  const alice = await TestClient.connect(built.wsUrl, { token })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'auth' })
  const frame = await alice.request({ type: 'publish', room: 'auth', data: 'once', idempotencyKey: 'a-1' })
  const res = await fetch(`${built.url}/api/rooms/auth/publish`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': 'a-1' }, body: JSON.stringify({ data: 'once' }) })
  t.equal(res.headers.get('idempotent-replayed'), 'true')
  t.match(await res.json(), { ok: true, offset: frame.offset, messageId: frame.messageId }, 'published as the token\'s sub: a replay of its frame')
})

t.test('HTTP: a concurrent request with a key still in progress gets 409', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const built = await build(t, { ...redis.env })
  const send = (key: string) => fetch(`${built.url}/api/rooms/slow/publish`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body: JSON.stringify({ data: 'x' }) })
  // writes wait while Redis is paused: the first request stays in progress
  redis.cli('CLIENT', 'PAUSE', '1500', 'WRITE')
  const first = send('slow-1')
  await new Promise(resolve => setTimeout(resolve, 200))
  const second = await send('slow-1')
  t.equal(second.status, 409)
  t.match(await second.json(), { code: 'idempotency_in_progress', message: /Idempotency-Key: a request with key "slow-1" is still in progress/ })
  const done = await first
  const body = await done.json()
  t.match([done.status, body], [200, { ok: true, offset: 1 }])
  const after = await send('slow-1')
  t.same([after.status, await after.json()], [200, body], 'once finished, a repeat is a replay')
})

t.test('the same key across two instances on one Redis', redisTestOptions(), async t => {
  const { instances: [a, b] } = await cluster(t, 2)
  const onA = await connect(t, a.wsUrl, 'alice')
  const onB = await connect(t, b.wsUrl, 'alice')
  await onA.request({ type: 'join', room: 'two' })
  await onB.request({ type: 'join', room: 'two' })
  const first = await onA.request({ type: 'publish', room: 'two', data: 'once', idempotencyKey: 'x-1' })
  const repeat = await onB.request({ type: 'publish', room: 'two', data: 'once', idempotencyKey: 'x-1' })
  t.match(repeat, { offset: first.offset, messageId: first.messageId, duplicate: true })
  t.match(await onB.request({ type: 'update', room: 'two', patch: { v: 1 }, idempotencyKey: 'u-1' }), { version: 1 })
  t.match(await onA.request({ type: 'update', room: 'two', patch: { v: 1 }, idempotencyKey: 'u-1' }), { version: 1, duplicate: true })
  // the same key on both at once: Redis decides which is first, in the write's own script
  onA.send({ type: 'publish', room: 'two', data: 'race', idempotencyKey: 'x-2', id: 'ra' })
  onB.send({ type: 'publish', room: 'two', data: 'race', idempotencyKey: 'x-2', id: 'rb' })
  const [ra, rb] = await Promise.all([onA.waitFor(m => m.id === 'ra', 'ra', 5000, true), onB.waitFor(m => m.id === 'rb', 'rb', 5000, true)])
  t.equal(ra.offset, rb.offset, 'one offset for both')
  t.equal([ra, rb].filter(r => r.duplicate === true).length, 1, 'exactly one of them is the duplicate')
  t.same((await requestJson(`${a.url}/api/rooms/two`)).body.offset, 2, 'two messages in the room: once and race')
})

for (const store of stores) {
  t.test(`${store.name}: kill -9 between the write and its ack`, store.opts, async t => {
    const env: Record<string, string> = { DATA_DIR: tempDir(t), ...await store.env(t) }
    const first = await startServer(t, env)
    const watcher = await connect(t, first.wsUrl, 'watcher')
    await watcher.request({ type: 'join', room: 'crash' })
    const writer = await TestClient.connect(first.wsUrl, { clientId: 'writer' })
    await writer.request({ type: 'join', room: 'crash' })
    // the writer never reads its ack: the watcher's copy says the write committed, then the server dies
    writer.send({ type: 'publish', room: 'crash', data: { n: 1 }, idempotencyKey: 'crash-1', id: 'lost' })
    const committed = await watcher.next('room_message')
    first.proc.kill('SIGKILL')
    await first.exited
    writer.ws.terminate()

    const second = await startServer(t, env)
    const retry = await connect(t, second.wsUrl, 'writer')
    await retry.request({ type: 'join', room: 'crash' })
    const reply = await retry.request({ type: 'publish', room: 'crash', data: { n: 1 }, idempotencyKey: 'crash-1' })
    t.match(reply, { type: 'ack', offset: committed.offset, messageId: committed.messageId, duplicate: true }, 'the retry returns the original reply')
    t.same((await history(t, second.wsUrl, 'crash')).map(m => m.data), [{ n: 1 }], 'the room has one message')
  })
}

t.test('epochs: joined, room_message and GET carry one; a replaced store is a new epoch', async t => {
  const first = await build(t)
  const alice = await client(t, first.wsUrl, 'alice')
  const empty = await alice.request({ type: 'join', room: 'e' })
  t.equal(empty.epoch, '', 'a room never written has no epoch yet')
  await alice.request({ type: 'publish', room: 'e', data: 1 })
  const message = await alice.next('room_message')
  t.match(message.epoch, /^[0-9a-f]{16}$/, 'room_message carries the epoch')
  t.equal((await requestJson(`${first.url}/api/rooms/e`)).body.epoch, message.epoch, 'GET /api/rooms/:room too')
  for (let i = 2; i <= 5; i++) await alice.request({ type: 'publish', room: 'e', data: i })
  const rejoin = await client(t, first.wsUrl, 'alice2')
  const same = await rejoin.request({ type: 'join', room: 'e', since: 3, epoch: message.epoch })
  t.match(same, { recovered: true, epoch: message.epoch, missed: [{ offset: 4 }, { offset: 5 }] })
  t.notOk('reason' in same)
  await first.app.close()

  // the store is replaced (a new DATA_DIR): the room grows back past the client's offset
  const second = await build(t)
  const bob = await client(t, second.wsUrl, 'bob')
  await bob.request({ type: 'join', room: 'e' })
  for (let i = 1; i <= 6; i++) await bob.request({ type: 'publish', room: 'e', data: `new ${i}` })
  const back = await client(t, second.wsUrl, 'alice')
  const joined = await back.request({ type: 'join', room: 'e', since: 5, epoch: message.epoch })
  t.match(joined, { recovered: false, reason: 'epoch_changed', offset: 6 }, 'since 5 of another epoch is not a recovery')
  t.not(joined.epoch, message.epoch, 'a new epoch')
  t.same(joined.missed.map((m: any) => m.data), ['new 1', 'new 2', 'new 3', 'new 4', 'new 5', 'new 6'], 'missed starts at the new history')
})

t.test('epochs: a flushed Redis starts a new epoch', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const built = await build(t, { ...redis.env })
  const alice = await client(t, built.wsUrl, 'alice')
  await alice.request({ type: 'join', room: 'r' })
  await alice.request({ type: 'publish', room: 'r', data: 1 })
  const before = (await alice.next('room_message')).epoch
  t.equal(redis.cli('HGET', 'sb:room:r', 'epoch'), before, 'kept in the room\'s hash')
  redis.cli('FLUSHALL')
  await alice.request({ type: 'publish', room: 'r', data: 2 })
  const after = await alice.next('room_message')
  t.match(after, { offset: 1 })
  t.not(after.epoch, before)
  const other = await client(t, built.wsUrl, 'bob')
  t.match(await other.request({ type: 'join', room: 'r', since: 1, epoch: before }), { recovered: false, reason: 'epoch_changed', missed: [{ offset: 1, data: 2 }] })
})

if (!haveRedis) t.comment('Redis variants skipped: redis-server is not installed')

t.test('exec: a repeat of a key is not run again', async t => {
  const built = await build(t, { ENABLE_CODE_EXECUTION: 'true' })
  const alice = await client(t, built.wsUrl, 'alice')
  await alice.request({ type: 'join', room: 'lab' })
  t.same(await alice.request({ type: 'exec', room: 'lab', code: '6 * 7', idempotencyKey: 'e-1' }), { type: 'ack', room: 'lab', id: 'r2' })
  await alice.next('exec_result')
  t.match(await alice.request({ type: 'exec', room: 'lab', code: '6 * 7', idempotencyKey: 'e-1' }), { type: 'ack', room: 'lab', duplicate: true })
  t.match(await alice.request({ type: 'exec', room: 'lab', code: '1', idempotencyKey: 'e-1' }), { code: 'idempotency_conflict' })
  await new Promise(resolve => setTimeout(resolve, 300))
  t.same(alice.all('exec_result').map(m => m.result), [42], 'run once')
})

t.test('SQLite: the record and the write commit together or not at all', async t => {
  const store = SqliteStore.open({ dataDir: tempDir(t), groupCommit: true, inboxMax: 100, inboxTtlMs: 60000, log: { info () {}, error () {} } })
  t.teardown(() => store.close())
  const claim = (key: string) => ({ owner: 'ws:alice', key, hash: 'h', expiresAt: Date.now() + 60000 })
  const message = (id: string, data: unknown) => ({ messageId: id, from: 'alice', data, timestamp: new Date().toISOString() })
  await store.appendMessage('r', message('m1', 1), 100, claim('k1'))
  t.same(await store.idempotency.recall('ws:alice', 'k1'), { hash: 'h', result: { offset: 1, messageId: 'm1' } })
  await t.rejects(store.appendMessage('r', message('m2', 1), 100, claim('k1')), { name: 'DuplicateKeyError', record: { result: { offset: 1 } } })
  t.equal((await store.loadRoom('r'))?.offset, 1, 'a duplicate takes no offset')

  // the disk is full: the batch fails, and neither the message nor its key is there
  store.db.pragma(`max_page_count = ${Number(store.db.pragma('page_count', { simple: true }))}`)
  await t.rejects(store.appendMessage('r', message('m3', 'x'.repeat(50000)), 100, claim('k3')), { name: 'StoreUnavailableError' })
  store.db.pragma('max_page_count = 1073741823')
  t.equal(await store.idempotency.recall('ws:alice', 'k3'), null, 'no key without its write')
  t.equal((await store.loadRoom('r'))?.offset, 1, 'no write without its key')
  const retried = await store.appendMessage('r', message('m3', 'x'), 100, claim('k3'))
  t.equal(retried.offset, 2, 'the retry is applied')
})
