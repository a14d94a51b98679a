import type { RedisLink } from './deps.js'

/** A cache channel's last event. */
export interface CachedEvent { event: string, data: string }

/** How long a cache channel keeps its last event [30 min, as Pusher documents]. */
export const CACHE_TTL_MS = 30 * 60 * 1000

/**
 * The last event of each cache channel of an app, for every instance: kept
 * CACHE_TTL_MS. On one node in memory, bounded: expired entries are swept and
 * at most `maxEntries` are kept (the oldest go first); with Redis one key per
 * channel that Redis expires.
 */
export interface ChannelCache {
  remember (channel: string, last: CachedEvent): void
  recall (channel: string): Promise<CachedEvent | undefined>
  /** Entries held in this process (0 with Redis). */
  readonly size: number
  close (): void
}

export class LocalChannelCache implements ChannelCache {
  private readonly entries = new Map<string, CachedEvent & { expiresAt: number }>()
  private readonly sweeper: NodeJS.Timeout

  constructor (private readonly maxEntries = 10000, private readonly ttlMs = CACHE_TTL_MS, private readonly now: () => number = Date.now) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(60000, ttlMs)).unref()
  }

  get size (): number {
    return this.entries.size
  }

  remember (channel: string, last: CachedEvent): void {
    // re-inserted: the Map's order is the order of last writes, so the first entry is the oldest
    this.entries.delete(channel)
    this.entries.set(channel, { ...last, expiresAt: this.now() + this.ttlMs })
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string)
  }

  async recall (channel: string): Promise<CachedEvent | undefined> {
    const entry = this.entries.get(channel)
    if (entry === undefined) return undefined
    if (entry.expiresAt <= this.now()) {
      this.entries.delete(channel)
      return undefined
    }
    return { event: entry.event, data: entry.data }
  }

  sweep (): void {
    const now = this.now()
    for (const [channel, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(channel)
  }

  close (): void {
    clearInterval(this.sweeper)
  }
}

/** `sb:pusher:{<app>:<channel>}:c`: the key earlier versions used, so a running deployment keeps its cached events. */
const cacheKey = (appId: string, channel: string) => `sb:pusher:{${appId}:${channel}}:c`

export class RedisChannelCache implements ChannelCache {
  readonly size = 0
  constructor (private readonly link: RedisLink, private readonly appId: string, private readonly ttlMs = CACHE_TTL_MS) {}

  remember (channel: string, last: CachedEvent): void {
    if (!this.link.ready) return
    this.link.commands.set(cacheKey(this.appId, channel), JSON.stringify(last), 'PX', this.ttlMs).catch(() => {})
  }

  async recall (channel: string): Promise<CachedEvent | undefined> {
    const raw = await this.link.commands.get(cacheKey(this.appId, channel))
    if (raw === null) return undefined
    try {
      const last = JSON.parse(raw) as { event?: unknown, data?: unknown }
      if (typeof last.event === 'string' && typeof last.data === 'string') return { event: last.event, data: last.data }
    } catch {}
    return undefined
  }

  close (): void {}
}
