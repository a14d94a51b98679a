import { randomUUID } from 'node:crypto'
import { signWebhook, webhookKey } from '../core/webhook-signature.js'
import type { FastifyBaseLogger } from 'fastify'

export { signWebhook, webhookKey }

/** One batch as it goes out: its body, and its headers for an attempt made at `timestampS` (signatures are per attempt). */
export interface WebhookRequest { body: string, headers: (timestampS: number) => Record<string, string> }

export interface WebhookSenderOptions {
  /** Every batch goes to each of them (each with its own retries). */
  urls: string[]
  /** Events gathered this long go out as one request [250]. */
  batchMs?: number
  /** The request of a batch; `id` is the batch's, the same for each retry. */
  encode: (events: Array<Record<string, unknown>>, id: string) => WebhookRequest
  /** Attempts per batch and URL, the first included [5]. */
  attempts?: number
  /** Delay before the first retry; doubled each time [1000]. */
  retryBaseMs?: number
  /** Per-request timeout [5000]. */
  timeoutMs?: number
  log: FastifyBaseLogger
  /** The log events of a retry and of a batch given up, and fields every such line carries (`{ source: 'native' }`, `{ appId }`). */
  logEvents?: { retry: string, failed: string }
  logFields?: Record<string, unknown>
  /** Told of each delivery outcome (metrics). */
  outcome?: (outcome: 'delivered' | 'retried' | 'failed') => void
}

/**
 * A batch as the Standard Webhooks specification wants it: the body
 * `{type: "switchboard.events", timestamp, data: {events}}` and the headers
 * `webhook-id`, `webhook-timestamp`, `webhook-signature`, so its libraries
 * (`standardwebhooks`) verify it. Throws on a secret that is not one.
 */
export function standardWebhooks (secret: string): WebhookSenderOptions['encode'] {
  const key = webhookKey(secret)
  return (events, id) => {
    const body = JSON.stringify({ type: 'switchboard.events', timestamp: new Date().toISOString(), data: { events } })
    return { body, headers: timestampS => ({ 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(timestampS), 'webhook-signature': signWebhook(key, id, timestampS, body) }) }
  }
}

/**
 * The engine's webhook delivery, for every protocol (native rooms, Pusher
 * apps): events gathered for `batchMs` go out as one POST to every URL, in
 * the protocol's encoding (`encode`); a non-2xx answer or a network error is
 * retried with exponential backoff, under the same batch id and a fresh
 * signature. Which events fire, and that each fires once across instances,
 * is the caller's (presence transitions).
 */
export class WebhookSender {
  private queue: Array<Record<string, unknown>> = []
  private timer: NodeJS.Timeout | undefined
  private readonly inFlight = new Set<Promise<void>>()
  private readonly retries = new Map<NodeJS.Timeout, () => void>()
  private closing = false

  constructor (private readonly opts: WebhookSenderOptions) {}

  add (event: Record<string, unknown>): void {
    this.queue.push(event)
    this.timer ??= setTimeout(() => this.flush(), this.opts.batchMs ?? 250)
  }

  flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.queue.length === 0) return
    const id = `msg_${randomUUID()}`
    const request = this.opts.encode(this.queue, id)
    this.queue = []
    for (const url of this.opts.urls) {
      const p = this.deliver(url, id, request, 1)
      this.inFlight.add(p)
      p.finally(() => this.inFlight.delete(p)).catch(() => {})
    }
  }

  private async deliver (url: string, id: string, request: WebhookRequest, attempt: number): Promise<void> {
    const attempts = this.opts.attempts ?? 5
    let status: number | undefined
    let error: string | undefined
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: request.headers(Math.floor(Date.now() / 1000)),
        body: request.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 5000)
      })
      status = res.status
      await res.arrayBuffer().catch(() => undefined)
      if (res.ok) {
        this.opts.outcome?.('delivered')
        return
      }
    } catch (err) {
      error = (err as Error).message
    }
    const target = new URL(url)
    const where = `${target.origin}${target.pathname}`
    const events = this.opts.logEvents ?? { retry: 'webhook.retry', failed: 'webhook.failed' }
    if (attempt >= attempts || this.closing) {
      this.opts.outcome?.('failed')
      this.opts.log.warn({ event: events.failed, ...this.opts.logFields, url: where, webhookId: id, status, error, attempts: attempt }, 'a webhook could not be delivered')
      return
    }
    this.opts.outcome?.('retried')
    const delay = (this.opts.retryBaseMs ?? 1000) * 2 ** (attempt - 1)
    this.opts.log.info({ event: events.retry, ...this.opts.logFields, url: where, webhookId: id, status, error, attempt, delayMs: delay }, 'retrying a webhook')
    await new Promise<void>(resolve => {
      const t = setTimeout(() => {
        this.retries.delete(t)
        resolve()
      }, delay)
      this.retries.set(t, resolve)
    })
    if (this.closing) {
      this.opts.outcome?.('failed')
      return
    }
    return await this.deliver(url, id, request, attempt + 1)
  }

  /** Sends what is queued once and waits for the requests in flight; retries stop. */
  async close (): Promise<void> {
    this.flush()
    this.closing = true
    for (const [t, resolve] of this.retries) {
      clearTimeout(t)
      resolve()
    }
    this.retries.clear()
    await Promise.allSettled([...this.inFlight])
  }
}
