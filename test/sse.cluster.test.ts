import t from 'tap'
import { redisTestOptions } from './support/redis-server.js'
import { cluster } from './support/cluster-instances.js'
import { StreamReader } from './support/stream-clients.js'

const publish = (url: string, room: string, data: unknown) =>
  fetch(`${url}/api/rooms/${room}/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ data }) })
    .then(res => res.status)

t.test('a stream resumes on the other instance after its own is killed: 0 gaps, 0 duplicates over 1,000 messages', redisTestOptions(), async t => {
  const { instances: [a, b] } = await cluster(t, 2, { ROOM_HISTORY_SIZE: '1000' })
  const total = 1000
  const first = new StreamReader(`${a.url}/stream?clientId=reader&rooms=feed`)
  t.teardown(() => first.close())
  await first.log.next('joined')
  // published on B all along: A delivers them to its stream until it dies
  const refused: number[] = []
  const publishing = (async () => {
    for (let n = 0; n < total; n++) if (await publish(b.url, 'feed', n) !== 200) refused.push(n)
  })()
  await first.log.until(events => events.filter(e => e.event === 'room_message').length >= 300)
  a.proc.kill('SIGKILL')
  await first.ended
  const seen = first.log.events.filter(e => e.id !== '')
  const last = seen[seen.length - 1]
  t.comment(`A was killed after ${first.log.roomMessages('feed').length} messages; resuming on B from ${last.id}`)

  const second = new StreamReader(`${b.url}/stream?clientId=reader&rooms=feed&lastEventId=${encodeURIComponent(last.id)}`)
  t.teardown(() => second.close())
  const joined = await second.log.next('joined')
  t.equal(joined.data.recovered, true, 'B recovered the stream from the id A wrote')
  await publishing
  t.same(refused, [], 'every publish was accepted')
  await second.log.until(() => first.log.roomMessages('feed').length + second.log.roomMessages('feed').length >= total)
  const got = [...first.log.roomMessages('feed'), ...second.log.roomMessages('feed')].map(m => m.data)
  const distinct = new Set(got).size
  t.equal(total - distinct, 0, '0 gaps')
  t.equal(got.length - distinct, 0, '0 duplicates')
  t.same(got, Array.from({ length: total }, (_, i) => i), 'in order')
})
