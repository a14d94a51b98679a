import t from 'tap'
import { createSigner } from 'fast-jwt'
import { build, waitFor } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

const SECRET = 'fairness-test-secret-long-enough-0123456789'
const sign = (claims: Record<string, unknown>) => createSigner({ key: SECRET, algorithm: 'HS256' })(claims)

t.test('exec is queued fairly per client key: 10 connections spinning while(true){} delay another client by at most the runs already started', async t => {
  const timeoutMs = 1000
  const { wsUrl } = await build(t, { AUTH_SECRET: SECRET, ENABLE_CODE_EXECUTION: 'true', EXEC_TIMEOUT_MS: String(timeoutMs) })
  const tokenA = sign({ sub: 'mallory' })
  const flooders = await Promise.all(Array.from({ length: 10 }, () => TestClient.connect(wsUrl, { token: tokenA })))
  const bob = await TestClient.connect(wsUrl, { token: sign({ sub: 'bob' }) })
  t.teardown(() => Promise.all([...flooders, bob].map(c => c.close())))
  for (const c of flooders) await c.request({ type: 'join', room: 'spin' })
  await bob.request({ type: 'join', room: 'calc' })

  // every flooder queues an endless loop: 10 runs of a full time limit each, 2 workers
  const acks = await Promise.all(flooders.map(c => c.request({ type: 'exec', room: 'spin', code: 'while(true){}' })))
  t.ok(acks.every(a => a.type === 'ack'), 'the 10 runs are queued')
  const watcher = flooders[0]

  const started = performance.now()
  t.match(await bob.request({ type: 'exec', room: 'calc', code: '1+1' }), { type: 'ack' })
  const result = await bob.next('exec_result')
  const waitedMs = performance.now() - started
  const floodResultsFirst = watcher.all('exec_result').length
  t.match(result, { ok: true, result: 2 })
  t.comment(`bob's 1+1 took ${waitedMs.toFixed(0)} ms with 10 endless runs queued ahead; ${floodResultsFirst} of them finished first`)
  // the promise is about order, not the clock (a loaded machine stretches every run): with two workers,
  // bob's run starts once one of the two runs already started ends, so at most those two (and a third
  // that a worker took in the same instant) finish first; FIFO would let all 10 finish first
  t.ok(floodResultsFirst <= 3, `bob waited for the runs already started, not the backlog (${floodResultsFirst} of 10 finished before)`)
  await waitFor(() => watcher.all('exec_result').length === 10, 'the flood to drain')
  t.ok(watcher.all('exec_result').every(r => r.error?.code === 'exec_timeout'), 'every endless run timed out')
})
