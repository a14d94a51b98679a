import { randomUUID } from 'node:crypto'
import { signWebhook, webhookKey } from '../core/webhook-signature.js'
import type { FastifyBaseLogger } from 'fastify'

export { signWebhook, webhookKey }

/** A protocol's webhook encoding: a batch's body, and its headers for an attempt made at `timestampS` (signatures are per attempt). */
export interface WebhookRequest {
  body: (events: Array<Record<string, unknown>>, id: string) => string
  headers: (body: string, id: string, timestampS: number) => Record<string, string>
}

/** Where batches wait until delivered or given up, so a restart resends them (the store's outbox). */
export interface WebhookOutbox {
  put (ns: string, id: string, value: string): Promise<void>
  remove (ns: string, id: string): Promise<void>
  claim (ns: string, staleMs: number): Promise<Array<{ id: string, value: string }>>
}

export interface WebhookSenderOptions {
  /** Every batch goes to each of them (each with its own retries). */
  urls: string[]
  /** Events gathered this long go out as one request [250]. */
  batchMs?: number
  /** The protocol's encoding of a batch; `id` is the batch's, the same for each retry. */
  encode: WebhookRequest
  /**
   * Keeps each batch and URL in the store until delivered or given up, so a
   * restart (or another instance, for a crashed one: entries older than
   * `staleMs` [60000]) sends it again, under the same id.
   */
  outbox?: { store: WebhookOutbox, ns: string, staleMs?: number }
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
export function standardWebhooks (secret: string): WebhookRequest {
  const key = webhookKey(secret)
  return {
    body: events => JSON.stringify({ type: 'switchboard.events', timestamp: new Date().toISOString(), data: { events } }),
    headers: (body, id, timestampS) => ({ 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(timestampS), 'webhook-signature': signWebhook(key, id, timestampS, body) })
  }
}

/** What the outbox keeps of one batch for one URL. */
interface Kept { url: string, id: string, body: string }

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
  private resumer: NodeJS.Timeout | undefined

  constructor (private readonly opts: WebhookSenderOptions) {}

  add (event: Record<string, unknown>): void {
    this.queue.push(event)
    // batchMs 0: each event is a request of its own
    if (this.opts.batchMs === 0) this.flush()
    else this.timer ??= setTimeout(() => this.flush(), this.opts.batchMs ?? 250)
  }

  flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.queue.length === 0) return
    const id = `msg_${randomUUID()}`
    const body = this.opts.encode.body(this.queue, id)
    this.queue = []
    for (const url of this.opts.urls) this.start({ url, id, body }, true)
  }

  /**
   * Sends again the batches an earlier run (or a crashed instance) left in the
   * outbox; with Redis, looks again every `staleMs`. Call once at start.
   */
  async resume (): Promise<number> {
    const outbox = this.opts.outbox
    if (outbox === undefined) return 0
    const staleMs = outbox.staleMs ?? 60000
    this.resumer ??= setInterval(() => { this.resume().catch(() => {}) }, Math.max(staleMs, 1000))
    this.resumer.unref()
    let entries: Array<{ id: string, value: string }>
    try {
      entries = await outbox.store.claim(outbox.ns, staleMs)
    } catch (err) {
      this.opts.log.warn({ event: 'webhook.outbox_failed', ...this.opts.logFields, error: (err as Error).message }, 'could not read the webhooks kept in the store')
      return 0
    }
    for (const entry of entries) this.start(JSON.parse(entry.value) as Kept, false)
    if (entries.length > 0) this.opts.log.info({ event: 'webhook.resumed', ...this.opts.logFields, batches: entries.length }, 'sending again the webhooks kept in the store')
    return entries.length
  }

  private start (kept: Kept, fresh: boolean): void {
    const outbox = this.opts.outbox
    const key = `${kept.id} ${kept.url}`
    // kept before the first attempt, removed once delivered or given up
    const stored = outbox !== undefined && fresh ? outbox.store.put(outbox.ns, key, JSON.stringify(kept)).catch(() => {}) : Promise.resolve()
    const p = this.deliver(kept.url, kept.id, kept.body, 1).then(async done => {
      await stored
      if (done && outbox !== undefined) await outbox.store.remove(outbox.ns, key).catch(() => {})
    })
    this.inFlight.add(p)
    p.finally(() => this.inFlight.delete(p)).catch(() => {})
  }

  /** true when the batch is settled (delivered, or given up); false when the shutdown interrupted it (the outbox keeps it). */
  private async deliver (url: string, id: string, body: string, attempt: number): Promise<boolean> {
    const attempts = this.opts.attempts ?? 5
    let status: number | undefined
    let error: string | undefined
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: this.opts.encode.headers(body, id, Math.floor(Date.now() / 1000)),
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 5000)
      })
      status = res.status
      await res.arrayBuffer().catch(() => undefined)
      if (res.ok) {
        this.opts.outcome?.('delivered')
        return true
      }
    } catch (err) {
      error = (err as Error).message
    }
    const target = new URL(url)
    const where = `${target.origin}${target.pathname}`
    const events = this.opts.logEvents ?? { retry: 'webhook.retry', failed: 'webhook.failed' }
    if (this.closing && this.opts.outbox !== undefined) return false
    if (attempt >= attempts || this.closing) {
      this.opts.outcome?.('failed')
      this.opts.log.warn({ event: events.failed, ...this.opts.logFields, url: where, webhookId: id, status, error, attempts: attempt }, 'a webhook could not be delivered')
      return true
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
      if (this.opts.outbox !== undefined) return false
      this.opts.outcome?.('failed')
      return true
    }
    return await this.deliver(url, id, body, attempt + 1)
  }

  /** Sends what is queued once and waits for the requests in flight; retries stop (with an outbox, what is not delivered stays there for the next start). */
  async close (): Promise<void> {
    clearInterval(this.resumer)
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
