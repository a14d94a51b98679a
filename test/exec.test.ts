import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

async function joinRoom (client: TestClient, room: string): Promise<void> {
  const joined = await client.request({ type: 'join', room })
  if (joined.type !== 'joined') throw new Error(`join failed: ${JSON.stringify(joined)}`)
}

t.test('exec is disabled by default: code_execution_disabled', async t => {
  const { wsUrl, url } = await build(t)
  const c = await TestClient.connect(wsUrl)
  t.teardown(() => c.close())
  t.match(await c.request({ type: 'exec', room: 'lab', code: '1+1' }), { type: 'error', code: 'code_execution_disabled' })
  const status = await (await fetch(`${url}/api/status`)).json() as any
  t.same(status.codeExecution, { enabled: false })
})

t.test('with ENABLE_CODE_EXECUTION every member gets the result; attacks fail; the server stays responsive', async t => {
  const { wsUrl, url } = await build(t, { ENABLE_CODE_EXECUTION: 'true', EXEC_TIMEOUT_MS: '500', EXEC_MEMORY_MB: '16' })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  const outsider = await TestClient.connect(wsUrl, { clientId: 'outsider' })
  t.teardown(() => Promise.all([alice.close(), bob.close(), outsider.close()]))
  await joinRoom(alice, 'lab')
  await joinRoom(bob, 'lab')

  const exec = async (code: string) => {
    const ack = await alice.request({ type: 'exec', room: 'lab', code })
    t.same(ack, { type: 'ack', room: 'lab', id: ack.id }, 'acknowledged')
    const [a, b] = await Promise.all([alice.next('exec_result', 15000), bob.next('exec_result', 15000)])
    t.same(a, b, 'every member receives the same result')
    t.match(a, { room: 'lab', from: 'alice', durationMs: Number, logs: Array })
    return a
  }

  t.match(await exec('1+1'), { ok: true, result: 2, error: null })
  t.match(await exec('console.log("hi from", "quickjs"); 7 * 6'), { ok: true, result: 42, logs: ['hi from quickjs'] })

  // an infinite loop, while another client pings
  const started = Date.now()
  const loop = exec('while (true) {}')
  const rtts: number[] = []
  while (Date.now() - started < 400) {
    const t0 = performance.now()
    await outsider.request({ type: 'ping' })
    rtts.push(performance.now() - t0)
    await new Promise(resolve => setTimeout(resolve, 20)) // within the message rate
  }
  const looped = await loop
  t.match(looped, { ok: false, result: null, error: { code: 'exec_timeout' } })
  t.ok(Date.now() - started < 500 + 600, `the loop was stopped after ${Date.now() - started} ms (limit 500)`)
  rtts.sort((a, b) => a - b)
  t.comment(`ping RTT during the loop: median ${rtts[rtts.length >> 1].toFixed(1)} ms, max ${rtts[rtts.length - 1].toFixed(1)} ms over ${rtts.length}`)
  // A loop on the main thread would hold every ping for the whole 500 ms run; the
  // max bound is loose because CI machines are shared, the median is the target.
  t.ok(rtts[rtts.length >> 1] < 50, 'another client\'s ping stayed under 50 ms (median)')
  t.ok(rtts[rtts.length - 1] < 250, 'and no ping waited for the loop')

  for (const code of ["this.constructor.constructor('return process')()", "require('child_process')", "import('fs')"]) {
    const out = await exec(code)
    t.match(out, { ok: false, error: { code: 'exec_failed' } }, `${code}: ${out.error?.message}`)
  }
  t.match(await exec('"after the attacks"'), { ok: true, result: 'after the attacks' })

  t.equal(outsider.all('exec_result').length, 0, 'a non-member receives no results')
  t.match(await outsider.request({ type: 'exec', room: 'lab', code: '1' }), { type: 'error', code: 'not_in_room' })
  t.match(await alice.request({ type: 'exec', room: 'lab', code: '' }), { type: 'error', code: 'invalid_message' })
  t.match(await alice.request({ type: 'exec', room: 'bad room!', code: '1' }), { type: 'error', code: 'invalid_message' })

  const status = await (await fetch(`${url}/api/status`)).json() as any
  t.match(status.codeExecution, { enabled: true, timeoutMs: 500, memoryMb: 16, timeouts: 1 })
})

t.test('a memory bomb is stopped by EXEC_MEMORY_MB, and the service stays alive', async t => {
  // a time limit no machine reaches first: on a loaded machine a bomb can take longer than a short
  // EXEC_TIMEOUT_MS to reach 16 MB, and would then be stopped by the time limit (tested above) instead
  const { wsUrl, url } = await build(t, { ENABLE_CODE_EXECUTION: 'true', EXEC_TIMEOUT_MS: '60000', EXEC_MEMORY_MB: '16' })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const outsider = await TestClient.connect(wsUrl, { clientId: 'outsider' })
  t.teardown(() => Promise.all([alice.close(), outsider.close()]))
  await joinRoom(alice, 'lab')
  t.match(await alice.request({ type: 'exec', room: 'lab', code: 'const a = []; for (;;) a.push(new Uint8Array(1e6))' }), { type: 'ack' })
  const bomb = await alice.next('exec_result', 60000)
  t.match(bomb, { ok: false, error: { code: 'exec_failed', message: /out of memory/ } }, 'a memory bomb is stopped')
  t.equal((await outsider.request({ type: 'ping' })).type, 'pong', 'the service is alive')
  t.match(await alice.request({ type: 'exec', room: 'lab', code: '"after the bomb"' }), { type: 'ack' })
  t.match(await alice.next('exec_result', 60000), { ok: true, result: 'after the bomb' }, 'and runs code again')
  const status = await (await fetch(`${url}/api/status`)).json() as any
  t.match(status.codeExecution, { enabled: true, memoryMb: 16, timeouts: 0 })
})

t.test('an exec sent right after a join, before its reply, waits for the join like a publish does', async t => {
  const { wsUrl } = await build(t, { ENABLE_CODE_EXECUTION: 'true' })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  // both frames leave before the `joined` comes back
  const [joined, published, executed] = await Promise.all([
    alice.request({ type: 'join', room: 'lab' }),
    alice.request({ type: 'publish', room: 'lab', data: 'hi' }),
    alice.request({ type: 'exec', room: 'lab', code: '6 * 7' })
  ])
  t.equal(joined.type, 'joined')
  t.match(published, { type: 'ack', room: 'lab', offset: Number }, 'the publish waited for the join')
  t.same(executed, { type: 'ack', room: 'lab', id: executed.id }, 'so did the exec: no not_in_room')
  t.match(await alice.next('exec_result', 15000), { room: 'lab', from: 'alice', ok: true, result: 42 })
})
