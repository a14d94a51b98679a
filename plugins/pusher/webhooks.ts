import { createHash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { PusherApp, WebhookTarget } from './apps.js'
import { sign } from './signatures.js'
import { WebhookSender, type WebhookOutbox } from './deps.js'

export interface WebhookOptions {
  /** Attempts per batch and URL, the first included [5]. */
  attempts?: number
  /** Delay before the first retry; doubled each time [1000]. */
  retryBaseMs?: number
  /** Per-request timeout [5000]. */
  timeoutMs?: number
  /** Told of each delivery outcome (metrics). */
  outcome?: (outcome: 'delivered' | 'retried' | 'failed') => void
  /**
   * The store's outbox: each batch is kept there until delivered or given up,
   * so a restart (or, with Redis, another instance once `staleMs` passed)
   * sends it again under the same batch; unset, batches live in memory only.
   */
  outbox?: WebhookOutbox
  /** With an outbox shared by instances (Redis): how old another instance's kept batch must be before this one sends it [60000]. */
  outboxStaleMs?: number
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
 * The webhooks of one app, delivered by the engine's WebhookSender (batching,
 * retries with exponential backoff), one sender per URL, in Pusher's encoding:
 * events gathered for `webhookBatchMs` go out as one signed POST
 * ({time_ms, events}) to each URL, holding the events that URL asked for
 * (none: no request); with `webhookBatchMs` 0 each event is a request of its
 * own. Content-Type is exactly application/json: the Pusher SDKs' validation
 * requires it.
 */
export class Webhooks {
  private readonly senders: Array<{ target: WebhookTarget, sender: WebhookSender }>

  constructor (app: PusherApp, log: FastifyBaseLogger, opts: WebhookOptions = {}) {
    this.senders = app.webhooks.map(target => ({
      target,
      sender: new WebhookSender({
        urls: [target.url],
        batchMs: app.webhookBatchMs,
        encode: {
          body: events => JSON.stringify({ time_ms: Date.now(), events }),
          headers: body => ({ ...target.headers, 'Content-Type': 'application/json', 'X-Pusher-Key': app.key, 'X-Pusher-Signature': sign(app.secret, body) })
        },
        attempts: opts.attempts,
        retryBaseMs: opts.retryBaseMs,
        timeoutMs: opts.timeoutMs,
        outcome: opts.outcome,
        // one namespace per app and endpoint: a restart resends a batch only to the URL it was for
        outbox: opts.outbox === undefined ? undefined : { store: opts.outbox, staleMs: opts.outboxStaleMs, ns: `webhooks:pusher:${app.id}:${createHash('sha256').update(target.url).digest('hex').slice(0, 16)}` },
        log,
        logEvents: { retry: 'pusher.webhook_retry', failed: 'pusher.webhook_failed' },
        logFields: { appId: app.id }
      })
    }))
  }

  get enabled (): boolean {
    return this.senders.length > 0
  }

  add (event: Record<string, unknown>): void {
    for (const { target, sender } of this.senders) if (wants(target, event)) sender.add(event)
  }

  flush (): void {
    for (const { sender } of this.senders) sender.flush()
  }

  /** Sends again the batches an earlier run (or a stopped instance) kept in the outbox; call once at start. */
  async resume (): Promise<void> {
    await Promise.all(this.senders.map(async ({ sender }) => await sender.resume()))
  }

  /** Sends what is queued once and waits for the requests in flight; retries stop (the outbox keeps what is not delivered). */
  async close (): Promise<void> {
    await Promise.all(this.senders.map(async ({ sender }) => await sender.close()))
  }
}
