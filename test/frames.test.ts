import t from 'tap'
import type { EventEmitter } from 'node:events'
import * as wsModule from 'ws'
import { textFrame } from '../plugins/engine/sessions.js'
import { uuid } from '../plugins/core/ids.js'
import { build, requestJson } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

/**
 * ws's frame parser: a named export of the package's ES module, left out of its type declarations.
 * (Not `WebSocket.Receiver`: that static is set only once something has loaded ws as CommonJS.)
 */
const { Receiver } = wsModule as unknown as { Receiver: new (opts: { isServer: boolean, maxPayload: number }) => EventEmitter & { write (chunk: Buffer): void } }

/** Feeds bytes to ws's own frame parser (client side: server frames are unmasked) and returns the messages it reads. */
function parse (bytes: Buffer): Array<{ text: string, binary: boolean }> {
  const messages: Array<{ text: string, binary: boolean }> = []
  const receiver = new Receiver({ isServer: false, maxPayload: 0 })
  receiver.on('message', (data: Buffer, binary: boolean) => messages.push({ text: data.toString(), binary }))
  receiver.on('error', (err: Error) => { throw err })
  receiver.write(bytes)
  return messages
}

t.test('textFrame builds frames ws parses, at every length encoding', async t => {
  // 7-bit, 16-bit and 64-bit length fields, on both sides of each boundary
  for (const length of [1, 125, 126, 127, 65535, 65536, 70000]) {
    const ascii = 'a'.repeat(length)
    t.same(parse(textFrame(ascii)), [{ text: ascii, binary: false }], `${length} ASCII bytes from a string`)
    t.same(parse(textFrame(Buffer.from(ascii))), [{ text: ascii, binary: false }], `${length} bytes from a Buffer`)
  }
  // multi-byte characters: the length field counts bytes, not characters
  for (const text of ['é'.repeat(63), 'é'.repeat(64), '€'.repeat(21846), '🙂'.repeat(16384)]) {
    const frame = textFrame(text)
    t.same(parse(frame), [{ text, binary: false }], `${text.length} UTF-16 units, ${Buffer.byteLength(text)} bytes`)
  }
  const two = Buffer.concat([textFrame('{"n":1}'), textFrame('{"n":2}')])
  t.same(parse(two).map(m => m.text), ['{"n":1}', '{"n":2}'], 'back-to-back frames split where they should')
})

t.test('uuid returns distinct version 4 UUIDs across refills of its random pool', async t => {
  const ids = Array.from({ length: 2000 }, () => uuid())
  const v4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
  t.equal(ids.filter(id => v4.test(id)).length, ids.length, 'every id is a version 4 UUID in canonical form')
  t.equal(new Set(ids).size, ids.length, 'no id repeats')
  // each of the 32 hex positions takes many values: the bytes are random, not a counter
  const varied = Array.from({ length: 36 }, (_, i) => new Set(ids.map(id => id[i])).size)
  t.ok(varied.filter((n, i) => ![8, 13, 14, 18, 23].includes(i)).every(n => n >= 4), 'every random position varies')
})

t.test('clients receive large and multi-byte messages intact through the server', async t => {
  const { wsUrl, url } = await build(t)
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => Promise.all([alice.close(), bob.close()]))
  await alice.request({ type: 'join', room: 'frames' })

  // room messages whose frames need the 16-bit and the 64-bit length fields
  for (const data of ['ü'.repeat(200), 'x'.repeat(65000), '🙂'.repeat(16000)]) {
    const pub = await requestJson(`${url}/api/rooms/frames/publish`, 'POST', { data })
    t.equal(pub.status, 200)
    const got = await alice.next('room_message')
    t.equal(got.data, data, `a room message of ${Buffer.byteLength(data)} data bytes arrives whole`)
    t.equal(got.messageId, pub.body.messageId)
  }
  // a direct message and its ack, 125/126 bytes of text around the first boundary
  for (const text of ['t'.repeat(125), 't'.repeat(126), 'ß'.repeat(3000)]) {
    const ack = await alice.request({ type: 'send', to: 'bob', text })
    t.match(ack, { type: 'ack', delivered: 1, queued: false })
    t.match(await bob.next('message'), { from: 'alice', text, messageId: ack.messageId })
  }
})
