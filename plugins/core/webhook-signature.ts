import { createHmac } from 'node:crypto'

/** The `whsec_` prefix of a Standard Webhooks secret. */
const PREFIX = 'whsec_'

/**
 * The key of a Standard Webhooks secret: `whsec_` (optional) and base64 of
 * 24 to 64 random bytes. Throws naming what is wrong (never the secret).
 */
export function webhookKey (secret: string): Buffer {
  const encoded = secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) throw new Error('must be whsec_ followed by base64')
  const key = Buffer.from(encoded, 'base64')
  if (key.length < 24 || key.length > 64) throw new Error(`must hold 24 to 64 bytes once base64-decoded (got ${key.length})`)
  return key
}

/** `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, as the Standard Webhooks specification signs. */
export function signWebhook (key: Buffer, id: string, timestampS: number, body: string): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampS}.${body}`).digest('base64')}`
}
