import { randomUUID } from 'node:crypto'
import { signWebhook, webhookKey } from '../core/webhook-signature.js'
import type { FastifyBaseLogger } from 'fastify'

export { signWebhook, webhookKey }

export interface WebhookSenderOptions {
  url: string
  /** The Standard Webhooks secret (`whsec_...`). */
  secret: string
  /** Events gathered this long go out as one request [250]. */
  batchMs?: number
  /** Attempts per batch, the first included [5]. */
  attempts?: number
  /** Delay before the first retry; doubled each time [1000]. */
  retryBaseMs?: number
  /** Per-request timeout [5000]. */
  timeoutMs?: number
  /** Names the sender in logs (`native`). */
  source: string
  log: FastifyBaseLogger
  /** Told of each delivery outcome (metrics). */
  outcome?: (outcome: 'delivered' | 'retried' | 'failed') => void
}

/**
 * Webhooks signed as the Standard Webhooks specification says
 * (`webhook-id`, `webhook-timestamp`, `webhook-signature` headers), so its
 * libraries (`standardwebhooks`) verify them. Events gathered for `batchMs`
 * go out as one POST `{type: "switchboard.events", timestamp, data: {events}}`;
 * a non-2xx answer or a network error is retried with exponential backoff,
 * with the same `webhook-id` (receivers deduplicate by it) and a fresh
 * timestamp and signature. Which events fire, and fire once across
 * instances, is the caller's (presence transitions).
 */
export class WebhookSender {
  private queue: Array<Record<string, unknown>> = []
  private timer: NodeJS.Timeout | undefined
  private readonly inFlight = new Set<Promise<void>>()
  private readonly retries = new Map<NodeJS.Timeout, () => void>()
  private readonly key: Buffer
  private closing = false

  constructor (private readonly opts: WebhookSenderOptions) {
    this.key = webhookKey(opts.secret)
  }

  add (event: Record<string, unknown>): void {
    this.queue.push(event)
    this.timer ??= setTimeout(() => this.flush(), this.opts.batchMs ?? 250)
  }

  flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.queue.length === 0) return
    const body = JSON.stringify({ type: 'switchboard.events', timestamp: new Date().toISOString(), data: { events: this.queue } })
    this.queue = []
    const p = this.deliver(`msg_${randomUUID()}`, body, 1)
    this.inFlight.add(p)
    p.finally(() => this.inFlight.delete(p)).catch(() => {})
  }

  private async deliver (id: string, body: string, attempt: number): Promise<void> {
    const attempts = this.opts.attempts ?? 5
    let status: number | undefined
    let error: string | undefined
    try {
      const timestamp = Math.floor(Date.now() / 1000)
      const res = await fetch(this.opts.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signWebhook(this.key, id, timestamp, body) },
        body,
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
    const target = new URL(this.opts.url)
    const where = `${target.origin}${target.pathname}`
    if (attempt >= attempts || this.closing) {
      this.opts.outcome?.('failed')
      this.opts.log.warn({ event: 'webhook.failed', source: this.opts.source, url: where, webhookId: id, status, error, attempts: attempt }, 'a webhook could not be delivered')
      return
    }
    this.opts.outcome?.('retried')
    const delay = (this.opts.retryBaseMs ?? 1000) * 2 ** (attempt - 1)
    this.opts.log.info({ event: 'webhook.retry', source: this.opts.source, url: where, webhookId: id, status, error, attempt, delayMs: delay }, 'retrying a webhook')
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
    return await this.deliver(id, body, attempt + 1)
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
