import type { FastifyBaseLogger } from 'fastify'
import type { PusherApp, WebhookTarget } from './apps.js'
import { sign } from './signatures.js'

export interface WebhookOptions {
  /** Attempts per batch and URL, the first included [5]. */
  attempts?: number
  /** Delay before the first retry; doubled each time [1000]. */
  retryBaseMs?: number
  /** Per-request timeout [5000]. */
  timeoutMs?: number
  /** Told of each delivery outcome (metrics). */
  outcome?: (outcome: 'delivered' | 'retried' | 'failed') => void
}

/** Whether a webhook endpoint asked for this event (its `event_types` and channel-name filter). */
export function wants (target: WebhookTarget, event: Record<string, unknown>): boolean {
  if (target.eventTypes !== null && !target.eventTypes.has(event.name as string)) return false
  const channel = typeof event.channel === 'string' ? event.channel : ''
  if (target.channelPrefix !== undefined && !channel.startsWith(target.channelPrefix)) return false
  if (target.channelSuffix !== undefined && !channel.endsWith(target.channelSuffix)) return false
  return true
}

/**
 * The webhooks of one app: events gathered for `webhookBatchMs` go out as one
 * signed POST ({time_ms, events}) to each URL, holding the events that URL
 * asked for (none: no request); with `webhookBatchMs` 0 each event is a
 * request of its own. A non-2xx answer or a network error is retried with
 * exponential backoff. Content-Type is exactly application/json: the Pusher
 * SDKs' validation requires it.
 */
export class Webhooks {
  private queue: Array<Record<string, unknown>> = []
  private timer: NodeJS.Timeout | undefined
  private readonly inFlight = new Set<Promise<void>>()
  private readonly retries = new Map<NodeJS.Timeout, () => void>()
  private closing = false

  constructor (private readonly app: PusherApp, private readonly log: FastifyBaseLogger, private readonly opts: WebhookOptions = {}) {}

  get enabled (): boolean {
    return this.app.webhooks.length > 0
  }

  add (event: Record<string, unknown>): void {
    if (!this.enabled || !this.app.webhooks.some(target => wants(target, event))) return
    this.queue.push(event)
    if (this.app.webhookBatchMs === 0) this.flush()
    else this.timer ??= setTimeout(() => this.flush(), this.app.webhookBatchMs)
  }

  flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.queue.length === 0) return
    const events = this.queue
    const now = Date.now()
    this.queue = []
    for (const target of this.app.webhooks) {
      const mine = events.filter(e => wants(target, e))
      if (mine.length > 0) this.track(this.deliver(target, JSON.stringify({ time_ms: now, events: mine }), 1))
    }
  }

  private track (p: Promise<void>): void {
    this.inFlight.add(p)
    p.finally(() => this.inFlight.delete(p)).catch(() => {})
  }

  private async deliver (target: WebhookTarget, body: string, attempt: number): Promise<void> {
    const url = target.url
    const attempts = this.opts.attempts ?? 5
    let status: number | undefined
    let error: string | undefined
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { ...target.headers, 'Content-Type': 'application/json', 'X-Pusher-Key': this.app.key, 'X-Pusher-Signature': sign(this.app.secret, body) },
        body,
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
    const parsed = new URL(url)
    const where = `${parsed.origin}${parsed.pathname}`
    if (attempt >= attempts || this.closing) {
      this.opts.outcome?.('failed')
      this.log.warn({ event: 'pusher.webhook_failed', appId: this.app.id, url: where, status, error, attempts: attempt }, 'a Pusher webhook could not be delivered')
      return
    }
    this.opts.outcome?.('retried')
    const delay = (this.opts.retryBaseMs ?? 1000) * 2 ** (attempt - 1)
    this.log.info({ event: 'pusher.webhook_retry', appId: this.app.id, url: where, status, error, attempt, delayMs: delay }, 'retrying a Pusher webhook')
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
    return this.deliver(target, body, attempt + 1)
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
