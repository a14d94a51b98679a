import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { createSigner } from 'fast-jwt'
import { build, type Built } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'
import type { SqliteStore } from '../plugins/store/sqlite.js'

const SECRET = 'rooms-list-test-secret-long-enough-0123456789'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)
const pad = (n: number, width = 5) => String(n).padStart(width, '0')

/** 3,000 `room-*`, 300 `team-*` and one `exact-one`: every stored room name, sorted. */
function names (): string[] {
  const out = ['exact-one']
  for (let i = 0; i < 3000; i++) out.push(`room-${pad(i)}`)
  for (let i = 0; i < 300; i++) out.push(`team-${pad(i, 4)}`)
  return out.sort()
}

async function get (built: Built, path: string, token?: string) {
  const res = await fetch(`${built.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
  return { status: res.status, body: await res.json() as any }
}

/** Walks every page with `limit`, returning the rooms in order and the largest page seen. */
async function walk (built: Built, limit: number | undefined, token?: string, prefix = '/api') {
  const seen: string[] = []
  let cursor: string | undefined
  let pages = 0
  let largest = 0
  do {
    const query = new URLSearchParams()
    if (limit !== undefined) query.set('limit', String(limit))
    if (cursor !== undefined) query.set('cursor', cursor)
    const { status, body } = await get(built, `${prefix}/rooms?${query}`, token)
    if (status !== 200) throw new Error(`page ${pages}: ${status} ${JSON.stringify(body)}`)
    seen.push(...body.rooms.map((r: { room: string }) => r.room))
    largest = Math.max(largest, body.rooms.length)
    cursor = body.nextCursor
    pages++
  } while (cursor !== undefined && pages < 10000)
  return { seen, pages, largest }
}

async function checkListing (t: Test, built: Built) {
  const all = names()
  const service = sign({ sub: 'ops', role: 'service' })
  const first = await get(built, '/api/rooms', service)
  t.equal(first.status, 200)
  t.equal(first.body.rooms.length, 100, 'the default page is 100 rooms')
  t.same(first.body.rooms.slice(0, 2), [{ room: 'exact-one', members: 0, version: 0 }, { room: 'room-00000', members: 0, version: 0 }], 'rooms keep their fields, in name order')
  t.equal(first.body.nextCursor, first.body.rooms[99].room, 'nextCursor is the last room of the page')
  t.equal((await get(built, '/api/rooms?limit=1001', service)).status, 400, 'a page of more than 1000 is refused')
  t.equal((await get(built, '/api/rooms?limit=0', service)).status, 400)

  for (const [limit, prefix] of [[1000, '/api'], [undefined, '/api/v1'], [7, '/api']] as const) {
    const { seen, pages, largest } = await walk(built, limit, service, prefix)
    t.same(seen, all, `limit ${limit ?? 'default'} on ${prefix}: the cursors walk every room exactly once, in order (${pages} pages)`)
    t.ok(largest <= (limit ?? 100), `no page is larger than ${limit ?? 100}`)
  }

  // a token whose claim allows `team-*` and one exact name sees those and nothing else
  const token = sign({ sub: 'tina', rooms: ['team-*', 'exact-one', 'nope'] })
  const allowed = all.filter(r => r.startsWith('team-') || r === 'exact-one')
  const filtered = await walk(built, 50, token)
  t.same(filtered.seen, allowed, `a rooms claim filters the list (${filtered.seen.length} of ${all.length})`)
  t.equal((await walk(built, 1000, sign({ sub: 'bob' }))).seen.length, all.length, 'a user token without a rooms claim sees every room')
  t.same((await get(built, '/api/rooms', sign({ sub: 'x', rooms: ['other-*'] }))).body, { rooms: [] }, 'a claim matching nothing sees nothing')
  t.same((await get(built, '/api/rooms')).status, 401, 'no token, no list')

  // a room with members but never written is listed too, at its place, with its members
  const alice = await TestClient.connect(built.wsUrl, { token: sign({ sub: 'alice' }) })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'team-0000a' })
  const withMember = await walk(built, 100, sign({ sub: 'tina', rooms: ['team-*'] }))
  t.same(withMember.seen, [...allowed.filter(r => r !== 'exact-one'), 'team-0000a'].sort(), 'the joined room is in the walk once')
  const page = await get(built, '/api/rooms?cursor=team-0000&limit=2', token)
  t.same(page.body.rooms, [{ room: 'team-0000a', members: 1, version: 0 }, { room: 'team-0001', members: 0, version: 0 }], 'a page after a cursor starts right after it')
}

t.test('GET /api/rooms on SQLite: bounded pages, cursors walk all rooms once, the rooms claim filters, an index range per page', async t => {
  const built = await build(t, { AUTH_SECRET: SECRET, RATE_LIMIT_MAX: '100000' })
  const db = (built.app.store as SqliteStore).db
  const insert = db.prepare('INSERT INTO rooms (room, state, version, "offset", updated_at) VALUES (?, \'{}\', 0, 0, ?)')
  db.transaction(() => { for (const name of names()) insert.run(name, new Date().toISOString()) })()
  const plan = db.prepare(`EXPLAIN QUERY PLAN SELECT r.room FROM rooms r LEFT JOIN room_offsets o ON o.room = r.room
    WHERE r.room > ? AND r.room >= ? AND r.room < ? ORDER BY r.room LIMIT ?`).all('a', 'b', 'c', 10) as Array<{ detail: string }>
  t.match(plan[0].detail, /SEARCH r USING PRIMARY KEY \(room>\? AND room<\?\)/, `a page is a range of the primary key, not a scan (${plan[0].detail})`)
  await checkListing(t, built)
})

t.test('GET /api/rooms on Redis: the same, from an ordered index (ZRANGEBYLEX), built once for rooms stored before it', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  // rooms stored by an earlier version: in the set only
  const all = names()
  const seed = new Redis(redis.url)
  const pipeline = seed.pipeline()
  for (const name of all) pipeline.sadd('sb:rooms', name).hset(`sb:room:${name}`, 'state', '{}', 'version', '0', 'offset', '0')
  await pipeline.exec()
  await seed.quit()
  const built = await build(t, { AUTH_SECRET: SECRET, RATE_LIMIT_MAX: '100000', REDIS_URL: redis.url })
  await checkListing(t, built)
  t.equal(redis.cli('ZCARD', 'sb:rooms:index'), String(all.length), 'the index holds every stored room')
  // a room written now enters the index with its first write
  const res = await fetch(`${built.url}/api/rooms/zz-new/publish`, { method: 'POST', headers: { authorization: `Bearer ${sign({ sub: 'ops', role: 'service' })}`, 'content-type': 'application/json' }, body: '{"data":1}' })
  t.equal(res.status, 200)
  t.equal(redis.cli('ZSCORE', 'sb:rooms:index', 'zz-new'), '0')
})
