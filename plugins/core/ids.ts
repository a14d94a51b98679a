import { randomFillSync } from 'node:crypto'

/** Two ASCII hex digits per byte value. */
const HEX = Array.from({ length: 256 }, (_, byte) => {
  const digits = byte.toString(16).padStart(2, '0')
  return [digits.charCodeAt(0), digits.charCodeAt(1)]
})
const DASH = 0x2d
/** Random bytes for 256 ids at a time, from the CSPRNG as crypto.randomUUID draws them. */
const pool = Buffer.alloc(16 * 256)
let next = pool.length
const text = Buffer.alloc(36)

/**
 * A random (version 4) UUID, as `crypto.randomUUID()` returns it, built in a
 * scratch buffer: one 36-character string per call. Node's own joins twenty
 * small strings, and flattening them allocates about 640 bytes per id; every
 * message the server relays gets one (measured with V8's sampling heap profiler).
 */
export function uuid (): string {
  if (next === pool.length) {
    randomFillSync(pool)
    next = 0
  }
  const at = next
  next += 16
  pool[at + 6] = (pool[at + 6] & 0x0f) | 0x40 // version 4
  pool[at + 8] = (pool[at + 8] & 0x3f) | 0x80 // variant 10xx
  let w = 0
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) text[w++] = DASH
    const digits = HEX[pool[at + i]]
    text[w++] = digits[0]
    text[w++] = digits[1]
  }
  return text.toString('latin1', 0, 36)
}
