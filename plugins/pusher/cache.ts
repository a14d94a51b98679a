import type { LastEventStore } from './deps.js'

/** A cache channel's last event. */
export interface CachedEvent { event: string, data: string }

/** How long a cache channel keeps its last event [30 min, as Pusher documents]. */
export const CACHE_TTL_MS = 30 * 60 * 1000

/**
 * The last event of each cache channel of an app, kept by the store
 * (`app.store.lastEvents`, namespace `pusher:<appId>`) for CACHE_TTL_MS: the
 * same on every instance, after a restart too, and never in process memory.
 */
export class ChannelCache {
  private readonly ns: string

  constructor (private readonly events: LastEventStore, appId: string, private readonly ttlMs = CACHE_TTL_MS) {
    this.ns = `pusher:${appId}`
  }

  /** Resolves once the event is committed. */
  async remember (channel: string, last: CachedEvent): Promise<void> {
    await this.events.remember(this.ns, channel, JSON.stringify(last), this.ttlMs)
  }

  async recall (channel: string): Promise<CachedEvent | undefined> {
    const raw = await this.events.recall(this.ns, channel)
    if (raw === null) return undefined
    try {
      const last = JSON.parse(raw) as { event?: unknown, data?: unknown }
      if (typeof last.event === 'string' && typeof last.data === 'string') return { event: last.event, data: last.data }
    } catch {}
    return undefined
  }
}
