import { createHash, createHmac, timingSafeEqual } from 'node:crypto'

/** hex(HMAC-SHA256(secret, text)): every Pusher signature. */
export function sign (secret: string, text: string): string {
  return createHmac('sha256', secret).update(text).digest('hex')
}

/** Constant-time comparison of two hex signatures (a length mismatch is a plain false). */
export function sameSignature (expected: string, given: string): boolean {
  const a = Buffer.from(expected)
  const b = Buffer.from(given)
  return a.length === b.length && timingSafeEqual(a, b)
}

export function md5 (body: string): string {
  return createHash('md5').update(body).digest('hex')
}

/**
 * Checks `auth` ("<key>:<hex>") of a subscription or sign-in: the key must be
 * the app's, the signature HMAC(secret, signed) in constant time.
 */
export function verifyAuth (key: string, secret: string, auth: unknown, signed: string): boolean {
  if (typeof auth !== 'string') return false
  const colon = auth.indexOf(':')
  if (colon < 0 || auth.slice(0, colon) !== key) return false
  return sameSignature(sign(secret, signed), auth.slice(colon + 1))
}

/** What a channel subscription's signature covers. */
export function channelAuthString (socketId: string, channel: string, channelData?: string): string {
  return channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`
}

/** What a user sign-in's signature covers (the raw user_data string). */
export function userAuthString (socketId: string, userData: string): string {
  return `${socketId}::user::${userData}`
}

export type RequestCheck = { ok: true } | { ok: false, status: 400 | 401, message: string }

/**
 * Verifies a signed HTTP API request: `METHOD\npath\nsorted params` with
 * lowercased keys, unescaped values and no auth_signature, HMAC'd with the
 * secret; auth_timestamp within `skewS` seconds; body_md5 over the raw body.
 */
export function verifyRequest (opts: {
  method: string
  path: string
  query: Record<string, string>
  body: string
  key: string
  secret: string
  now?: number
  skewS?: number
}): RequestCheck {
  const q = opts.query
  if (q.auth_key !== opts.key) return { ok: false, status: 401, message: 'Unknown auth_key' }
  if (q.auth_version !== undefined && q.auth_version !== '1.0') return { ok: false, status: 400, message: `auth_version must be 1.0 (got ${q.auth_version})` }
  const ts = Number(q.auth_timestamp)
  const now = Math.floor((opts.now ?? Date.now()) / 1000)
  const skew = opts.skewS ?? 600
  if (!/^\d+$/.test(q.auth_timestamp ?? '')) return { ok: false, status: 401, message: 'auth_timestamp must be a unix time in seconds' }
  if (Math.abs(now - ts) > skew) return { ok: false, status: 401, message: `Timestamp expired: Given timestamp (${ts}) not within ${skew}s of server time (${now})` }
  if (opts.body !== '') {
    if (q.body_md5 === undefined || !sameSignature(md5(opts.body), q.body_md5)) return { ok: false, status: 401, message: 'body_md5 does not match the body' }
  }
  const params = Object.keys(q)
    .filter(k => k !== 'auth_signature')
    .map(k => [k.toLowerCase(), q[k]] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&')
  const expected = sign(opts.secret, `${opts.method.toUpperCase()}\n${opts.path}\n${params}`)
  if (typeof q.auth_signature !== 'string' || !sameSignature(expected, q.auth_signature)) {
    return { ok: false, status: 401, message: `Invalid signature: you should have sent HmacSHA256Hex(${JSON.stringify(`${opts.method.toUpperCase()}\n${opts.path}\n${params}`)}, your_secret_key)` }
  }
  return { ok: true }
}
