import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { appendFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { build, requestJson, tempDir, waitFor, type Built } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import type { SqliteStore } from '../plugins/store/sqlite.js'

const BIG = 'x'.repeat(20000)

/** While the store cannot write: every write path answers unavailable/503 with the cause; health says so; one log line. */
async function checkDegraded (t: Test, built: Built, alice: TestClient, cause: RegExp) {
  for (let i = 0; i < 5; i++) {
    const reply = await alice.request({ type: 'publish', room: 'r', data: BIG })
    t.match(reply, { type: 'error', code: 'unavailable' }, `publish ${i + 1}: unavailable`)
    t.match(reply.message, cause, `publish ${i + 1}: the error names the cause (${reply.message})`)
  }
  const update = await alice.request({ type: 'update', room: 'r', patch: { big: BIG } })
  t.match(update, { type: 'error', code: 'unavailable', message: cause }, 'update: unavailable naming the cause')
  const send = await alice.request({ type: 'send', to: 'offline-bob', text: BIG })
  t.match(send, { type: 'error', code: 'unavailable', message: cause }, 'a direct message to an offline client (inbox write): unavailable, not internal_error')

  const http = await requestJson(`${built.url}/api/send`, 'POST', { from: 'svc', to: 'offline-bob', text: BIG })
  t.equal(http.status, 503, 'POST /api/send: 503, not 500')
  t.match(http.body, { statusCode: 503, error: 'Service Unavailable', code: 'unavailable', message: cause })
  const publish = await requestJson(`${built.url}/api/rooms/r/publish`, 'POST', { data: BIG })
  t.match(publish, { status: 503, body: { code: 'unavailable', message: cause } }, 'POST /api/rooms/r/publish: 503')

  const ready = await requestJson(`${built.url}/ready`)
  t.equal(ready.status, 503, '/ready answers 503')
  t.match(ready.body, { status: 'not_ready', problems: [cause] })
  const status = await requestJson(`${built.url}/api/status`)
  t.match(status.body, { status: 'degraded', store: { kind: 'sqlite', writable: false, reason: cause } }, '/api/status is degraded with the reason')

  const failures = built.logs().filter(l => l.event === 'store.batch_failed')
  t.equal(failures.length, 1, `one store.batch_failed line for ${5 + 4} failed writes`)
  t.match(failures[0], { level: 50, reason: cause })
  t.notOk('err' in failures[0], 'no stack in it')
  t.same(built.logs().filter(l => l.level >= 50 && l.event !== 'store.batch_failed').map(l => l.event), [], 'no other error line')
  t.ok(alice.open, 'the connection survives')
}

async function checkRecovered (t: Test, built: Built, alice: TestClient) {
  await waitFor(async () => (await requestJson(`${built.url}/ready`)).status === 200, '/ready 200 again', 10000)
  t.match(built.logs().find(l => l.event === 'store.recovered'), { level: 30, reason: String }, 'the recovery is logged once')
  t.match((await requestJson(`${built.url}/api/status`)).body, { status: 'ok', store: { writable: true } })
  t.match(await alice.request({ type: 'publish', room: 'r', data: BIG }), { type: 'ack', offset: 2 }, 'a write succeeds, and the refused ones took no offset')
  t.match(await requestJson(`${built.url}/api/send`, 'POST', { from: 'svc', to: 'offline-bob', text: 'hi' }), { status: 200, body: { queued: true } })
}

/** A server whose store probes every 50 ms, and alice in room `r` with one message published. */
async function serverWithAlice (t: Test, dataDir?: string): Promise<{ built: Built, db: SqliteStore['db'], alice: TestClient }> {
  const built = await build(t, {}, { dataDir, app: { store: { probeIntervalMs: 50 } } })
  const alice = await TestClient.connect(built.wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'r' })
  t.match(await alice.request({ type: 'publish', room: 'r', data: 'one' }), { type: 'ack', offset: 1 })
  return { built, db: (built.app.store as SqliteStore).db, alice }
}

t.test('SQLITE_FULL (max_page_count): writes answered unavailable/503 naming it, /ready 503, degraded, one log line; recovers when space returns', async t => {
  const { built, db, alice } = await serverWithAlice(t)
  db.pragma(`max_page_count = ${Number(db.pragma('page_count', { simple: true }))}`)
  await checkDegraded(t, built, alice, /SQLITE_FULL: database or disk is full/)
  db.pragma('max_page_count = 1073741823')
  await checkRecovered(t, built, alice)
})

t.test('a real disk full (DATA_DIR on a 2 MB tmpfs filled up): the same, and it recovers once the space is freed', async t => {
  const dataDir = tempDir(t)
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dataDir], { encoding: 'utf8' })
  if (mount.status !== 0) {
    const reason = `!!! cannot mount a tmpfs (${(mount.stderr || mount.error?.message || '').trim()}): the real disk-full test is SKIPPED; the max_page_count test above still runs !!!`
    process.stderr.write(`\n${reason}\n\n`)
    t.plan(0, reason)
    return
  }
  t.teardown(() => { spawnSync('umount', ['-l', dataDir]) })
  const { built, alice } = await serverWithAlice(t, dataDir)

  const filler = join(dataDir, 'filler')
  let filled = 0
  try {
    for (;;) {
      appendFileSync(filler, Buffer.alloc(16384))
      filled += 16384
    }
  } catch (err) {
    t.equal((err as NodeJS.ErrnoException).code, 'ENOSPC', `the disk is full (${filled} bytes of filler)`)
  }
  await checkDegraded(t, built, alice, /SQLITE_FULL: database or disk is full/)
  rmSync(filler)
  await checkRecovered(t, built, alice)
  await alice.close()
  await built.app.close()
})

t.test('a read-only database (SQLITE_READONLY) is told the same way', async t => {
  const { built, db, alice } = await serverWithAlice(t)
  db.pragma('query_only = ON')
  const reply = await alice.request({ type: 'publish', room: 'r', data: 1 })
  t.match(reply, { type: 'error', code: 'unavailable', message: /SQLITE_READONLY/ })
  t.match(await requestJson(`${built.url}/ready`), { status: 503, body: { problems: [/store: writes fail: SQLITE_READONLY/] } })
  db.pragma('query_only = OFF')
  await waitFor(async () => (await requestJson(`${built.url}/ready`)).status === 200, '/ready 200 again')
})
