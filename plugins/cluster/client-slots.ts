import type { Redis } from 'ioredis'
import { RedisUnavailableError, instanceKey, sweepDeadInstances, type RedisLink } from '../core/redis.js'

/**
 * Where per-client connection counts live. The local one is a Map; a Redis one
 * counts across instances. `acquire` must check and count atomically.
 */
export interface ClientSlotCounter {
  acquire (clientKey: string, limit: number): Promise<{ ok: boolean, current: number }>
  release (clientKey: string): Promise<void> | void
  count (clientKey: string): number | undefined
  readonly clients: number
}

export class LocalClientSlots implements ClientSlotCounter {
  private readonly counts = new Map<string, number>()

  get clients (): number {
    return this.counts.size
  }

  async acquire (clientKey: string, limit: number) {
    const current = this.counts.get(clientKey) ?? 0
    if (current >= limit) return { ok: false, current }
    this.counts.set(clientKey, current + 1)
    return { ok: true, current: current + 1 }
  }

  release (clientKey: string): void {
    const current = this.counts.get(clientKey) ?? 0
    if (current <= 1) this.counts.delete(clientKey)
    else this.counts.set(clientKey, current - 1)
  }

  count (clientKey: string): number | undefined {
    return this.counts.get(clientKey) ?? 0
  }
}

/*
 * sb:slots:<clientKey> is a hash serverId → connections that instance holds for
 * the key. Acquiring sums the fields of live instances (their heartbeat key
 * exists) and drops the others, so the slots of a crashed instance are free
 * again once its heartbeat key expires (REDIS_INSTANCE_TTL_MS, 15 s by default).
 * On a Redis Cluster (where the script cannot read heartbeat keys of other
 * slots) every field counts, and sb:slots:idx:<serverId> lists the client keys
 * an instance holds fields in, so the instance that claims it after a crash
 * removes them (the same 15 s plus one heartbeat).
 */
const acquireScript = (cluster: boolean) => sweepDeadInstances(cluster) + `
local live = sweepDead(KEYS[1], ARGV[1], ARGV[2], function (field) return field end, true)
local held = 0
for _, entry in ipairs(live) do held = held + tonumber(entry[2]) end
if held >= tonumber(ARGV[3]) then return {0, held} end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return {1, held + 1}`

const RELEASE = `
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1`

interface Scripts {
  sbAcquireSlot (key: string, me: string, prefix: string, limit: number): Promise<[number, number]>
  sbReleaseSlot (key: string, me: string): Promise<number>
}

const slotsKey = (prefix: string, clientKey: string) => `${prefix}slots:${clientKey}`
const indexKey = (prefix: string, serverId: string) => `${prefix}slots:idx:${serverId}`

/**
 * Per-client connection counts shared by every instance through Redis. This
 * instance's share is kept here; a release Redis missed marks its key, and the
 * restore (in the heartbeat's MULTI) rewrites every share and removes those that went.
 */
export class RedisClientSlots implements ClientSlotCounter {
  private readonly local = new Map<string, number>()
  private stale = new Set<string>()
  private restoring: Set<string> | null = null
  private readonly redis: Redis & Scripts

  constructor (private readonly link: RedisLink) {
    link.commands.defineCommand('sbAcquireSlot', { numberOfKeys: 1, lua: acquireScript(link.cluster) })
    link.commands.defineCommand('sbReleaseSlot', { numberOfKeys: 1, lua: RELEASE })
    this.redis = link.commands as Redis & Scripts
    link.addRestorer({
      write: tx => {
        for (const [clientKey, count] of this.local) {
          if (link.cluster) tx.sadd(indexKey(link.prefix, link.serverId), clientKey)
          tx.hset(slotsKey(link.prefix, clientKey), link.serverId, count)
        }
        for (const clientKey of this.stale) if (!this.local.has(clientKey)) tx.hdel(slotsKey(link.prefix, clientKey), link.serverId)
        this.restoring = this.stale
        this.stale = new Set()
      },
      written: ok => {
        if (!ok && this.restoring) for (const clientKey of this.restoring) this.stale.add(clientKey)
        this.restoring = null
      }
    })
    if (link.cluster) {
      link.onInstanceGone(async dead => {
        const idx = indexKey(link.prefix, dead)
        await Promise.all((await link.commands.smembers(idx)).map(clientKey => link.commands.hdel(slotsKey(link.prefix, clientKey), dead)))
        await link.commands.del(idx)
      })
    }
  }

  get clients (): number {
    return this.local.size
  }

  /** Refused with 503 while Redis is unreachable: the limit cannot be checked cluster-wide. */
  async acquire (clientKey: string, limit: number): Promise<{ ok: boolean, current: number }> {
    this.link.requireReady()
    let reply: [number, number]
    try {
      // Redis Cluster: indexed before the count exists, so a crash never leaves a count the sweep cannot find
      if (this.link.cluster && !this.local.has(clientKey)) await this.redis.sadd(indexKey(this.link.prefix, this.link.serverId), clientKey)
      reply = await this.redis.sbAcquireSlot(slotsKey(this.link.prefix, clientKey), this.link.serverId, instanceKey(this.link.prefix, ''), limit)
    } catch (err) {
      throw new RedisUnavailableError(`redis could not count the connection: ${(err as Error).message}`)
    }
    if (reply[0] !== 1) return { ok: false, current: Number(reply[1]) }
    this.local.set(clientKey, (this.local.get(clientKey) ?? 0) + 1)
    return { ok: true, current: Number(reply[1]) }
  }

  async release (clientKey: string): Promise<void> {
    const current = this.local.get(clientKey) ?? 0
    if (current <= 1) this.local.delete(clientKey)
    else this.local.set(clientKey, current - 1)
    if (!this.link.ready) {
      this.stale.add(clientKey) // the restore writes what is left of it
      return
    }
    try {
      await this.redis.sbReleaseSlot(slotsKey(this.link.prefix, clientKey), this.link.serverId)
      if (this.link.cluster && !this.local.has(clientKey)) await this.redis.srem(indexKey(this.link.prefix, this.link.serverId), clientKey)
    } catch (err) {
      this.stale.add(clientKey)
      throw err
    }
  }

  count (clientKey: string): number | undefined {
    return this.local.get(clientKey) ?? 0
  }
}
