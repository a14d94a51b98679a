import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import type { ClientSlotCounter } from './limits.js'
import { KEY_PREFIX, RedisUnavailableError, instanceKey, type RedisLink } from './redis.js'

/*
 * sb:slots:<clientKey> is a hash serverId → connections that instance holds for
 * the key. Acquiring sums the fields of live instances (their heartbeat key
 * exists) and drops the others, so the slots of a crashed instance are free
 * again once its heartbeat key expires (REDIS_INSTANCE_TTL_MS, 15 s by default).
 */
const ACQUIRE = `
local fields = redis.call('HGETALL', KEYS[1])
local held = 0
for i = 1, #fields, 2 do
  local server = fields[i]
  if server == ARGV[1] or redis.call('EXISTS', ARGV[2] .. server) == 1 then
    held = held + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], server)
  end
end
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

const slotsKey = (clientKey: string) => `${KEY_PREFIX}slots:${clientKey}`

/** Per-client connection counts shared by every instance through Redis. */
export class RedisClientSlots implements ClientSlotCounter {
  /** This instance's share, rewritten to Redis when the connection comes back. */
  private readonly local = new Map<string, number>()
  private readonly redis: Redis & Scripts

  constructor (private readonly link: RedisLink) {
    link.commands.defineCommand('sbAcquireSlot', { numberOfKeys: 1, lua: ACQUIRE })
    link.commands.defineCommand('sbReleaseSlot', { numberOfKeys: 1, lua: RELEASE })
    this.redis = link.commands as Redis & Scripts
    link.onReady(() => {
      for (const [clientKey, count] of this.local) this.redis.hset(slotsKey(clientKey), link.serverId, count).catch(() => {})
    })
  }

  get clients (): number {
    return this.local.size
  }

  /** Refused with 503 while Redis is unreachable: the limit cannot be checked cluster-wide. */
  async acquire (clientKey: string, limit: number): Promise<{ ok: boolean, current: number }> {
    this.link.requireReady()
    let reply: [number, number]
    try {
      reply = await this.redis.sbAcquireSlot(slotsKey(clientKey), this.link.serverId, instanceKey(''), limit)
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
    if (!this.link.ready) return // the reconnect rewrites this instance's counts
    await this.redis.sbReleaseSlot(slotsKey(clientKey), this.link.serverId)
  }

  count (clientKey: string): number | undefined {
    return this.local.get(clientKey) ?? 0
  }
}

/** With REDIS_URL set, MAX_CONNECTIONS_PER_CLIENT counts across instances; MAX_CONNECTIONS stays per instance. */
export default fp(async function redisLimits (app) {
  if (app.redisLink) app.limits.counter = new RedisClientSlots(app.redisLink)
}, { name: 'redis-limits', fastify: '5.x', dependencies: ['redis', 'limits'] })
