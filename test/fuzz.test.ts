import t from 'tap'
import { build } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { seededRandom } from './support/doors.js'

const SEED = Number(process.env.FUZZ_SEED ?? 20261126)
// deterministic, so a failure can be replayed from its seed
const random = seededRandom(SEED)
const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)]
const int = (n: number) => Math.floor(random() * n)

function randomValue (depth = 0): unknown {
  switch (int(depth > 3 ? 6 : 9)) {
    case 0: return int(1000) - 500
    case 1: return pick([1e308, -1e308, 2 ** 53 + 1, -0, 0.1, 1.2345678901234568e+29])
    case 2: return 'x'.repeat(int(200))
    case 3: return pick([true, false, null])
    case 4: return pick(['', '\u0000', '\uD800', '💥', '<script>', '../../etc/passwd', '%s%n'])
    case 5: return pick(['ping', 'send', 'exec', 'join', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'])
    case 6: return Array.from({ length: int(5) }, () => randomValue(depth + 1))
    default: {
      const obj: Record<string, unknown> = {}
      for (let i = int(5); i > 0; i--) obj[pick(['type', 'id', 'to', 'text', 'room', 'code', 'data', 'patch', 'a', 'prototype'])] = randomValue(depth + 1)
      return obj
    }
  }
}

/** One hostile text frame; every one must be answered (an error, or the reply of a valid request). */
function hostileFrame (): string {
  switch (int(14)) {
    case 0: return '{"type":"ping"' + '}'.repeat(int(3)) + pick(['', ',', ']'])
    case 1: return '['.repeat(1000 + int(20000))
    case 2: return `{"type":"send","to":"bob","text":${'['.repeat(2000)}"x"${']'.repeat(2000)}}`
    case 3: return '{"type":"ping","__proto__":{"polluted":true}}'
    case 4: return '{"type":"send","to":"x","text":"y","constructor":{"prototype":{"polluted":true}}}'
    case 5: return `{"type":"ping","id":${pick(['1e400', '-1e400', '123456789012345678901234567890', '{"a":1}', '[1]', 'null', 'true'])}}`
    case 6: return `{"type":${JSON.stringify(pick(['__proto__', 'constructor', 'toString', 'hasOwnProperty', '', ' ping', 'PING']))}}`
    case 7: return JSON.stringify({ type: 'send', to: randomValue(), text: randomValue() })
    case 8: return JSON.stringify({ type: 'exec', room: randomValue(), code: randomValue() })
    case 9: return JSON.stringify(randomValue())
    case 10: return pick(['', ' ', 'null', '0', '"ping"', 'true', '[]', '{}', 'undefined', 'NaN', '\u0000'])
    case 11: return Buffer.from(Array.from({ length: 1 + int(64) }, () => 0x20 + int(95))).toString()
    case 12: return JSON.stringify({ type: 'ping', id: 'i'.repeat(int(300)) })
    default: return JSON.stringify({ type: pick(['ping', 'send', 'exec']), id: int(1e6), ...(randomValue() as object) })
  }
}

t.test('10,000+ hostile frames from several connections: no crash, every frame answered, no pollution, heap back near baseline', async t => {
  const { wsUrl, app } = await build(t, { WS_MESSAGES_PER_SECOND: '100000', WS_MAX_PAYLOAD: '65536', MAX_CONNECTIONS_PER_CLIENT: '50', LOG_LEVEL: 'warn' })
  const gc = (globalThis as { gc?: () => void }).gc
  t.ok(gc, 'the test runs with --expose-gc (.taprc)')
  const protoKeys = Object.getOwnPropertyNames(Object.prototype).sort()
  gc?.()
  const heapBefore = process.memoryUsage().heapUsed

  const clients = await Promise.all([0, 1, 2, 3].map(i => TestClient.connect(wsUrl, { clientId: `fuzz-${i}` })))
  let sent = 0
  const perClient = 2600
  const batch = 100
  await Promise.all(clients.map(async (c, index) => {
    let own = 0
    for (let done = 0; done < perClient; done += batch) {
      for (let i = 0; i < batch; i++) {
        if (int(20) === 0) c.ws.send(Buffer.from(Array.from({ length: int(100) }, () => int(256))), { binary: true })
        else c.send(hostileFrame())
        own++
      }
      // every frame gets exactly one answer addressed to its sender (nothing here reaches another client)
      await c.waitFor(() => c.received.length - 1 >= own, `answers to ${own} frames on connection ${index}`, 20000, true)
    }
    sent += own
    t.equal(c.received.length - 1, own, `connection ${index}: ${own} frames, ${own} answers`)
    t.ok(c.open, `connection ${index} is still open`)
  }))
  const answers = clients.flatMap(c => c.received.slice(1))
  t.ok(sent >= 10000, `${sent} frames sent`)
  t.ok(answers.every(m => ['error', 'pong', 'ack'].includes(m.type)), 'every answer is an error or a normal reply')
  const codes = new Set(answers.filter(m => m.type === 'error').map(m => m.code))
  t.comment(`error codes seen: ${[...codes].join(', ')}; pongs ${answers.filter(m => m.type === 'pong').length}, acks ${answers.filter(m => m.type === 'ack').length}`)
  t.notOk(codes.has('internal_error'), 'no frame reached a handler that failed')

  // frames that end a connection by policy: invalid UTF-8 (1007) and oversized (1009)
  for (let i = 0; i < 20; i++) {
    const c = await TestClient.connect(wsUrl, { clientId: 'fuzz-closer' })
    if (i % 2 === 0) c.ws.send(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0x22, 0x7d]), { binary: false })
    else c.send('x'.repeat(65537))
    t.equal((await c.closed).code, i % 2 === 0 ? 1007 : 1009)
  }

  await Promise.all(clients.map(c => c.close()))
  const survivor = await TestClient.connect(wsUrl, { clientId: 'after' })
  t.equal((await survivor.request({ type: 'ping' })).type, 'pong', 'the server still answers')
  await survivor.close()

  t.equal(({} as Record<string, unknown>).polluted, undefined, '({}).polluted is undefined')
  t.equal(([] as unknown as Record<string, unknown>).polluted, undefined, '([]).polluted is undefined')
  t.same(Object.getOwnPropertyNames(Object.prototype).sort(), protoKeys, 'Object.prototype has no new keys')
  t.equal(typeof Object.prototype.toString, 'function')
  t.equal(app.sessions.size, 0, 'every connection was released')

  answers.length = 0
  for (const c of clients) c.received.length = 0
  await new Promise(resolve => setTimeout(resolve, 100))
  gc?.()
  const grown = (process.memoryUsage().heapUsed - heapBefore) / 1048576
  t.comment(`heap before ${(heapBefore / 1048576).toFixed(1)} MB, after ${(process.memoryUsage().heapUsed / 1048576).toFixed(1)} MB (seed ${SEED})`)
  t.ok(grown < 16, `heap back near baseline (+${grown.toFixed(1)} MB)`)
})
