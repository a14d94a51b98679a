import t from 'tap'
import WebSocket from 'ws'
import { build, requestJson, tempDir, waitFor } from './support/helper.js'
import { freePort, startServerOnPort } from './support/fixed-port-server.js'
import { TestClient } from './support/ws-client.js'
import { SwitchboardClient, SwitchboardError, type WebSocketConstructor, type WebSocketLike } from '../client/index.js'

/**
 * A real `ws` socket with a flaky network: while `dropNextWrite` is set, the
 * server's reply to the next write (an `ack`, or an error) is lost and the
 * connection breaks, as when the network dies between the commit and the ack.
 */
function lossyWebSocket (state: { dropNextWrite: boolean, dropped: Array<Record<string, unknown>>, sent: Array<Record<string, unknown>> }): WebSocketConstructor {
  return class LossySocket implements WebSocketLike {
    private readonly ws: WebSocket
    onopen: ((ev: unknown) => void) | null = null
    onmessage: ((ev: { data: unknown }) => void) | null = null
    onclose: ((ev: { code: number, reason: string }) => void) | null = null
    onerror: ((ev: unknown) => void) | null = null
    constructor (url: string) {
      this.ws = new WebSocket(url)
      this.ws.on('open', () => this.onopen?.({}))
      this.ws.on('error', err => this.onerror?.(err))
      this.ws.on('close', (code, reason) => this.onclose?.({ code, reason: reason.toString() }))
      this.ws.on('message', data => {
        const text = data.toString()
        const msg = JSON.parse(text) as Record<string, unknown>
        if (state.dropNextWrite && (msg.type === 'ack' || msg.type === 'error') && typeof msg.id === 'string') {
          state.dropNextWrite = false
          state.dropped.push(msg)
          this.ws.terminate()
          return
        }
        this.onmessage?.({ data: text })
      })
    }

    get readyState (): number { return this.ws.readyState }
    send (data: string): void {
      state.sent.push(JSON.parse(data) as Record<string, unknown>)
      this.ws.send(data)
    }

    close (code?: number, reason?: string): void { this.ws.close(code, reason) }
  }
}

t.test('a write whose ack is lost is resent with its key after the rejoin and settles with the original reply, applied once', async t => {
  const built = await build(t)
  const state = { dropNextWrite: false, dropped: [] as Array<Record<string, unknown>>, sent: [] as Array<Record<string, unknown>> }
  const alice = new SwitchboardClient({ url: built.url, clientId: 'alice', WebSocket: lossyWebSocket(state), reconnect: { initialDelayMs: 20, maxDelayMs: 50 } })
  t.teardown(() => alice.close())
  await alice.connect()
  const room = await alice.join('lossy')
  const seen: unknown[] = []
  room.on('message', m => seen.push(m.data))

  // two identical messages are two messages: nothing is merged by content any more
  await room.publish({ text: 'same' })
  state.dropNextWrite = true
  const ack = await room.publish({ text: 'same' })
  t.equal(state.dropped.length, 1, 'the first reply was lost and the connection broke')
  t.match(ack, { room: 'lossy', offset: 2, messageId: state.dropped[0].messageId, duplicate: true }, 'the resend got the original reply')
  const publishes = state.sent.filter(f => f.type === 'publish')
  t.equal(publishes.length, 3, 'two publishes, the second one sent twice')
  t.equal(publishes[1].idempotencyKey, publishes[2].idempotencyKey, 'with the same key')
  t.not(publishes[0].idempotencyKey, publishes[1].idempotencyKey, 'each write has its own key')
  t.match(publishes[0].idempotencyKey, /^[0-9a-f-]{32,36}$/)
  t.same(seen, [{ text: 'same' }, { text: 'same' }], 'both messages delivered once each')
  t.match((await requestJson(`${built.url}/api/rooms/lossy`)).body, { offset: 2 }, 'the room has two messages, not three')

  state.dropNextWrite = true
  const updated = await room.update({ step: 1 }, { baseVersion: 0 })
  t.match(updated, { version: 1, duplicate: true }, 'an update in flight at a drop: the original version, no version_conflict')

  state.dropNextWrite = true
  const sent = await alice.send('bob', 'hello')
  t.match(sent, { queued: true, duplicate: true }, 'send: settled, not outcome_unknown')
  const bob = await TestClient.connect(built.wsUrl, { clientId: 'bob' })
  t.teardown(() => bob.close())
  await bob.next('message')
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(bob.all('message').length, 1, 'bob has the message once')
})

t.test('only a write whose key may have expired rejects with outcome_unknown', async t => {
  const built = await build(t, { IDEMPOTENCY_TTL_MS: '1000' })
  const state = { dropNextWrite: true, dropped: [] as Array<Record<string, unknown>>, sent: [] as Array<Record<string, unknown>> }
  // a request may take requestTimeoutMs to be answered: with the TTL under it, no resend can be trusted
  const alice = new SwitchboardClient({ url: built.url, clientId: 'alice', WebSocket: lossyWebSocket(state), requestTimeoutMs: 2000, reconnect: { initialDelayMs: 20, maxDelayMs: 50 } })
  t.teardown(() => alice.close())
  await alice.connect()
  const err = await alice.send('bob', 'x').then(() => null, (e: SwitchboardError) => e)
  t.ok(err instanceof SwitchboardError)
  t.equal(err?.code, 'outcome_unknown')
  t.match(err?.message, /idempotency key may have expired \(idempotencyTtlMs 1000\)/)
})

t.test('a rejoin in another epoch starts the room again from the new history', async t => {
  const port = await freePort()
  let server = await startServerOnPort(t, port, { DATA_DIR: tempDir(t) })
  const alice = new SwitchboardClient({ url: server.url, clientId: 'alice', reconnect: { initialDelayMs: 50, maxDelayMs: 200 } })
  t.teardown(() => alice.close())
  await alice.connect()
  const room = await alice.join('ep')
  const seen: unknown[] = []
  const resets: unknown[] = []
  room.on('message', m => seen.push(m.data))
  room.on('reset', e => resets.push(e))
  for (let i = 1; i <= 3; i++) await room.publish(i)
  await waitFor(() => seen.length === 3, 'the three messages')
  const oldEpoch = room.epoch
  t.match(oldEpoch, /^[0-9a-f]{16}$/, 'the room knows its epoch')

  // the store is replaced: the room's history starts again and grows past offset 3 before alice is back
  await server.stop('SIGKILL')
  server = await startServerOnPort(t, port, { DATA_DIR: tempDir(t) })
  const bob = await TestClient.connect(server.wsUrl, { clientId: 'bob' })
  t.teardown(() => bob.close())
  await bob.request({ type: 'join', room: 'ep' })
  for (const n of ['a', 'b', 'c', 'd']) await bob.request({ type: 'publish', room: 'ep', data: n })

  await waitFor(() => seen.length === 7, 'the new history', 10000)
  t.same(resets, [{ room: 'ep', previousOffset: 3, offset: 0 }], 'reset once: offsets of another epoch')
  t.same(seen, [1, 2, 3, 'a', 'b', 'c', 'd'], 'the new history is delivered from its start, once')
  t.not(room.epoch, oldEpoch)
  t.equal(room.offset, 4)
})
