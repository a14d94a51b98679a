import t from 'tap'
import { redisTestOptions } from './support/redis-server.js'
import { cluster, connect } from './support/cluster-instances.js'

// Invariant: once a member has its `joined`, a join on any instance lists it
// (as on one node: membership is written to Redis before `joined` goes out).
t.test('a join on another instance right after a joined lists the member, 200 of 200', redisTestOptions(), async t => {
  const { instances: [a, b] } = await cluster(t, 2)
  const xena = await connect(t, a.wsUrl, 'xena')
  const yuri = await connect(t, b.wsUrl, 'yuri')
  let missing = 0
  for (let i = 0; i < 200; i++) {
    const room = `members-${i}`
    // alternate which instance joins first
    const [first, second] = i % 2 === 0 ? [xena, yuri] : [yuri, xena]
    await first.request({ type: 'join', room })
    const joined = await second.request({ type: 'join', room })
    if (joined.type !== 'joined') throw new Error(`join ${i}: ${JSON.stringify(joined)}`)
    if (!joined.members.includes(i % 2 === 0 ? 'xena' : 'yuri')) missing++
    // within MAX_ROOMS_PER_CONNECTION
    await first.request({ type: 'leave', room })
    await second.request({ type: 'leave', room })
  }
  t.equal(missing, 0, `every second joiner saw the first, who is on the other instance (${missing} of 200 did not)`)
})
