import type { FastifyBaseLogger } from 'fastify'
import type { PusherApp } from './apps.js'
import { sign } from './signatures.js'
import { WebhookSender } from './deps.js'

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

/**
 * The webhooks of one app, delivered by the engine's WebhookSender (batching,
 * retries with backoff) in Pusher's encoding: events gathered for
 * `webhookBatchMs` go out as one POST ({time_ms, events}) to every URL,
 * signed with the app's secret (X-Pusher-Key, X-Pusher-Signature).
 * Content-Type is exactly application/json: the Pusher SDKs' validation
 * requires it.
 */
export class Webhooks {
  private readonly sender: WebhookSender | null

  constructor (app: PusherApp, log: FastifyBaseLogger, opts: WebhookOptions = {}) {
    this.sender = app.webhooks.length === 0
      ? null
      : new WebhookSender({
        urls: app.webhooks,
        batchMs: app.webhookBatchMs,
        encode: {
          body: events => JSON.stringify({ time_ms: Date.now(), events }),
          headers: body => ({ 'Content-Type': 'application/json', 'X-Pusher-Key': app.key, 'X-Pusher-Signature': sign(app.secret, body) })
        },
        attempts: opts.attempts,
        retryBaseMs: opts.retryBaseMs,
        timeoutMs: opts.timeoutMs,
        outcome: opts.outcome,
        log,
        logEvents: { retry: 'pusher.webhook_retry', failed: 'pusher.webhook_failed' },
        logFields: { appId: app.id }
      })
  }

  get enabled (): boolean {
    return this.sender !== null
  }

  add (event: Record<string, unknown>): void {
    this.sender?.add(event)
  }

  flush (): void {
    this.sender?.flush()
  }

  /** Sends what is queued once and waits for the requests in flight; retries stop. */
  async close (): Promise<void> {
    await this.sender?.close()
  }
}
