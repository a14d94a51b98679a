import type { Redis } from 'ioredis'

/**
 * Requests waiting to be delivered (webhook batches), kept by the store so a
 * restart or a crash of the instance that queued them does not lose them. An
 * entry belongs to the store instance that put it (its owner) until it is
 * removed, or claimed by another: SQLite (one process per data directory)
 * claims every entry of an earlier run at once; Redis (several instances)
 * those older than `staleMs`, each by one instance.
 */
export interface OutboxStore {
  /** Keeps `value` under `id` in the namespace; resolves once committed. */
  put (ns: string, id: string, value: string): Promise<void>
  /** Delivered or given up; resolves once committed. */
  remove (ns: string, id: string): Promise<void>
  /** The namespace's entries of other owners (SQLite: all; Redis: put at least `staleMs` ago), now this owner's. */
  claim (ns: string, staleMs: number): Promise<Array<{ id: string, value: string }>>
}

/** KEYS: the namespace's hash; ARGV: me, now, staleMs. Takes every entry of another owner older than staleMs; returns id, value pairs. */
const CLAIM = `
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local e = cjson.decode(all[i + 1])
  if e.o ~= ARGV[1] and tonumber(e.t) <= tonumber(ARGV[2]) - tonumber(ARGV[3]) then
    e.o = ARGV[1]
    e.t = tonumber(ARGV[2])
    redis.call('HSET', KEYS[1], all[i], cjson.encode(e))
    out[#out + 1] = all[i]
    out[#out + 1] = e.v
  end
end
return out`

type Client = Redis & { sbOutboxClaim (key: string, me: string, now: number, staleMs: number): Promise<string[]> }

/** One hash per namespace: `<prefix>outbox:{<ns>}`, field id → {v: value, o: owner, t: ms}. */
export class RedisOutbox implements OutboxStore {
  private readonly client: Client

  constructor (redis: Redis, private readonly prefix: string, private readonly owner: string, private readonly call: <T>(op: () => Promise<T>) => Promise<T>) {
    redis.defineCommand('sbOutboxClaim', { numberOfKeys: 1, lua: CLAIM })
    this.client = redis as Client
  }

  private key (ns: string): string {
    return `${this.prefix}outbox:{${ns}}`
  }

  async put (ns: string, id: string, value: string): Promise<void> {
    await this.call(() => this.client.hset(this.key(ns), id, JSON.stringify({ v: value, o: this.owner, t: Date.now() })))
  }

  async remove (ns: string, id: string): Promise<void> {
    await this.call(() => this.client.hdel(this.key(ns), id))
  }

  async claim (ns: string, staleMs: number): Promise<Array<{ id: string, value: string }>> {
    const flat = await this.call(() => this.client.sbOutboxClaim(this.key(ns), this.owner, Date.now(), staleMs))
    const out: Array<{ id: string, value: string }> = []
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i], value: flat[i + 1] })
    return out
  }
}
