import t from 'tap'
import { requestJson, waitFor } from './support/helper.js'
import { redisTestOptions } from './support/redis-server.js'
import { cluster, connect } from './support/cluster-instances.js'

const TTL_MS = 3000

// Invariants: `delivered` counts only connections that can still receive, and a
// crashed instance's members get a presence `leave` once its TTL expires.
t.test('an instance killed with SIGKILL', redisTestOptions(), async t => {
  const { redis, instances: [a, b] } = await cluster(t, 2, { REDIS_INSTANCE_TTL_MS: String(TTL_MS) })
  const xena = await connect(t, a.wsUrl, 'xena')
  const yuri = await connect(t, b.wsUrl, 'yuri')
  await xena.request({ type: 'join', room: 'crash-room' })
  t.same((await yuri.request({ type: 'join', room: 'crash-room' })).members.sort(), ['xena', 'yuri'], 'yuri sees xena, who is on A')
  t.match(await yuri.request({ type: 'send', to: 'xena', text: 'before' }), { delivered: 1, queued: false }, 'delivered while A is alive')

  a.proc.kill('SIGKILL')
  await a.exited

  // within the TTL: A's heartbeat key still exists, but its connections are gone
  const acks = []
  for (let i = 0; i < 20; i++) acks.push(await yuri.request({ type: 'send', to: 'xena', text: `after ${i}` }))
  t.equal(redis.cli('EXISTS', `sb:instance:${xena.welcome.serverId}`), '1', 'all sent while A\'s heartbeat key still existed')
  t.same(acks.filter(ack => ack.delivered !== 0 || ack.queued !== true), [], '20 of 20 acked queued, none acked delivered')

  const leave = await yuri.waitFor(m => m.type === 'presence' && m.event === 'leave' && m.clientId === 'xena', 'xena\'s leave', TTL_MS * 4)
  t.match(leave, { room: 'crash-room', event: 'leave', clientId: 'xena' }, 'the crashed instance\'s member leaves the room')
  // the key was last refreshed up to one beat before the kill, so "after the TTL" is: the key is gone
  t.equal(redis.cli('EXISTS', `sb:instance:${xena.welcome.serverId}`), '0', 'not before A\'s heartbeat key expired')
  await waitFor(async () => (await requestJson(`${b.url}/api/rooms/crash-room`)).body.members.length === 1, 'xena to leave the member list', 5000, 100)
  t.same((await requestJson(`${b.url}/api/rooms/crash-room`)).body.members, ['yuri'])
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(yuri.all('presence').filter(m => m.event === 'leave').length, 1, 'announced once')

  const back = await connect(t, b.wsUrl, 'xena')
  for (let i = 0; i < 20; i++) t.match(await back.next('message'), { text: `after ${i}` })
})
