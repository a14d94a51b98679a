import t from 'tap'
import Database from 'better-sqlite3'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { requestJson, tempDir } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { runUntilExit, startServer } from './support/process.js'
import { DATABASE_FILE } from '../plugins/store/sqlite.js'

t.test('state, version, offsets and history survive a graceful restart', async t => {
  const env = { DATA_DIR: tempDir(t), SHUTDOWN_GRACE_MS: '5000' }
  const first = await startServer(t, env)
  const alice = await TestClient.connect(first.wsUrl, { clientId: 'alice' })
  await alice.request({ type: 'join', room: 'doc' })
  for (let i = 1; i <= 5; i++) await alice.request({ type: 'publish', room: 'doc', data: { n: i } })
  const { epoch } = await alice.next('room_message')
  await alice.request({ type: 'update', room: 'doc', patch: { title: 'Plan', body: { a: 1 } } })
  await alice.request({ type: 'update', room: 'doc', patch: { body: { b: 2 } } })
  await alice.request({ type: 'update', room: 'doc', patch: { title: null } })

  first.proc.kill('SIGTERM')
  t.equal((await first.exited).code, 0, 'a clean exit')
  const steps = first.logs().filter(l => l.event === 'shutdown.step').map(l => l.step)
  t.ok(steps.indexOf('rooms_flushed') >= 0 && steps.indexOf('rooms_flushed') < steps.indexOf('store_closed'), `rooms flushed before the store closed (${steps.join(', ')})`)

  const second = await startServer(t, env)
  t.same((await requestJson(`${second.url}/api/rooms/doc`)).body, { room: 'doc', state: { body: { a: 1, b: 2 } }, version: 3, offset: 5, epoch, members: [] }, 'the same room, in the same epoch')
  const bob = await TestClient.connect(second.wsUrl, { clientId: 'bob' })
  t.teardown(() => bob.close())
  const joined = await bob.request({ type: 'join', room: 'doc', since: 2 })
  t.equal(joined.recovered, true)
  t.same(joined.missed.map((m: any) => [m.offset, m.data.n, m.from]), [[3, 3, 'alice'], [4, 4, 'alice'], [5, 5, 'alice']])
  t.match(await bob.request({ type: 'publish', room: 'doc', data: 'after' }), { offset: 6 }, 'offsets carry on')
  t.match(await bob.request({ type: 'update', room: 'doc', patch: { c: 3 } }), { version: 4 }, 'versions carry on')
})

t.test('every acknowledged update survives a kill -9 in the middle of 1,000 updates', async t => {
  const dataDir = tempDir(t)
  const env = { DATA_DIR: dataDir, WS_MESSAGES_PER_SECOND: '100000', ROOM_HISTORY_SIZE: '1000' }
  const first = await startServer(t, env)
  const client = await TestClient.connect(first.wsUrl, { clientId: 'writer' })
  await client.request({ type: 'join', room: 'counter' })

  // even ids patch the state, odd ids publish a message: 1,000 updates in all, 50 in flight
  const total = 1000
  const window = 50
  const ackedPatches = new Map<number, number>()
  const ackedMessages = new Map<number, number>()
  const failures: string[] = []
  let sent = 0
  let killed = false
  const sendNext = () => {
    const i = sent++
    if (i % 2 === 0) client.send({ type: 'update', room: 'counter', patch: { [`k${i}`]: i }, id: i })
    else client.send({ type: 'publish', room: 'counter', data: i, id: i })
  }
  client.ws.on('message', raw => {
    const m = JSON.parse(raw.toString())
    if (typeof m.id !== 'number') return
    if (m.type !== 'ack') failures.push(raw.toString())
    else if (m.version !== undefined) ackedPatches.set(m.id, m.version)
    else ackedMessages.set(m.id, m.offset)
    if (killed) return
    if (ackedPatches.size + ackedMessages.size >= 400) {
      killed = true
      first.proc.kill('SIGKILL')
    } else if (sent < total) sendNext()
  })
  for (let i = 0; i < window; i++) sendNext()
  t.equal((await first.exited).signal, 'SIGKILL')
  await client.closed
  t.same(failures, [], 'every update was acknowledged until the kill')
  const acked = ackedPatches.size + ackedMessages.size
  t.ok(acked >= 400 && acked < total, `killed in the middle: ${acked} of ${total} acknowledged, ${sent} sent`)

  const db = new Database(join(dataDir, DATABASE_FILE))
  t.equal(db.pragma('integrity_check', { simple: true }), 'ok', 'PRAGMA integrity_check is ok after the kill')
  db.close()

  const second = await startServer(t, env)
  const room = (await requestJson(`${second.url}/api/rooms/counter`)).body
  const missing = [...ackedPatches.keys()].filter(i => room.state[`k${i}`] !== i)
  t.same(missing, [], 'no acknowledged state change is missing')
  t.ok(room.version >= Math.max(...ackedPatches.values()), `version ${room.version} covers every acknowledged one`)
  t.equal(Object.keys(room.state).length, room.version, 'one key per committed version, nothing half-applied')

  const reader = await TestClient.connect(second.wsUrl, { clientId: 'reader' })
  t.teardown(() => reader.close())
  const history = await reader.request({ type: 'join', room: 'counter', since: 0 })
  const byOffset = new Map(history.missed.map((m: any) => [m.offset, m.data]))
  const lost = [...ackedMessages].filter(([i, offset]) => byOffset.get(offset) !== i)
  t.same(lost, [], 'every acknowledged message is in history at its offset')
  t.equal(history.recovered, true)
  t.same(history.missed.map((m: any) => m.offset), Array.from({ length: history.offset }, (_, i) => i + 1), 'offsets have no gaps')
})

t.test('queued direct messages survive a kill -9', async t => {
  const env = { DATA_DIR: tempDir(t) }
  const first = await startServer(t, env)
  for (const text of ['one', 'two']) {
    const res = await requestJson(`${first.url}/api/send`, 'POST', { from: 'svc', to: 'carol', text })
    t.match(res.body, { ok: true, queued: true })
  }
  first.proc.kill('SIGKILL')
  await first.exited

  const second = await startServer(t, env)
  const carol = await TestClient.connect(second.wsUrl, { clientId: 'carol' })
  t.teardown(() => carol.close())
  t.same([(await carol.next('message')).text, (await carol.next('message')).text], ['one', 'two'])
})

t.test('the server refuses to start on a database file it cannot use', async t => {
  const dataDir = tempDir(t)
  writeFileSync(join(dataDir, DATABASE_FILE), 'not a database '.repeat(500))
  const { code, output } = await runUntilExit(t, { DATA_DIR: dataDir })
  t.equal(code, 1)
  t.match(output, /store\.open_failed/)
  t.match(output, /not a database/)
})
