import type { Redis } from 'ioredis'

/**
 * The last event of a channel, kept for a while (Pusher's cache channels):
 * in the store, so it survives a restart and is the same on every instance.
 * Names are per namespace (`pusher:<appId>`); values are opaque strings.
 */
export interface LastEventStore {
  /** Keeps `value` as the last event of `name` for `ttlMs`; resolves once committed. */
  remember (ns: string, name: string, value: string, ttlMs: number): Promise<void>
  /** The unexpired last event, or null. */
  recall (ns: string, name: string): Promise<string | null>
  /** Drops expired entries everywhere; returns how many (Redis expires them itself: 0). */
  expire (now?: number): Promise<number>
}

/**
 * One key per channel that Redis expires: `<prefix><ns head>:{<ns rest>:<name>}:c`.
 * For `pusher:<app>` that is `sb:pusher:{<app>:<channel>}:c`, the key earlier
 * versions used, so a running deployment keeps its cached events across an upgrade.
 */
export class RedisLastEvents implements LastEventStore {
  constructor (
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly call: <T>(op: () => Promise<T>) => Promise<T>
  ) {}

  private key (ns: string, name: string): string {
    const colon = ns.indexOf(':')
    const [head, rest] = colon < 0 ? [ns, ''] : [ns.slice(0, colon), ns.slice(colon + 1) + ':']
    return `${this.prefix}${head}:{${rest}${name}}:c`
  }

  async remember (ns: string, name: string, value: string, ttlMs: number): Promise<void> {
    await this.call(() => this.redis.set(this.key(ns, name), value, 'PX', Math.max(1, Math.round(ttlMs))))
  }

  async recall (ns: string, name: string): Promise<string | null> {
    return await this.call(() => this.redis.get(this.key(ns, name)))
  }

  async expire (): Promise<number> {
    return 0
  }
}
