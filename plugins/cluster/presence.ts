import type { ChainableCommander, Redis } from 'ioredis'
import { RedisUnavailableError, instanceKey, type RedisLink } from '../core/redis.js'

/** Members of a channel that left with a crashed instance, and whether it left the channel vacant. */
export type PresenceGoneHandler = (name: string, gone: Array<{ key: string, info: unknown }>, vacated: boolean) => void

/** What joining a member did across the instances. */
export type JoinOutcome = 'added' | 'present' | 'full'

/**
 * Who is in each channel on the other instances. Each instance reports its
 * own transitions (its first and last local subscriber of a channel, a
 * member's first and last local session); the answer says whether that
 * transition is also the cluster's, so occupied/vacated and member events are
 * decided once across all instances, and caps (a channel's member limit)
 * count every instance. One node uses `LocalPresence` (its transitions are
 * the cluster's); with REDIS_URL `RedisPresence`. Channels are named within a
 * namespace (`room`, `pusher:<app>`, `yjs`), as in the broker.
 */
export interface Presence {
  readonly kind: 'local' | 'redis'
  /** This instance's first subscriber of the channel: true when no other instance had one (occupied). */
  occupy (ns: string, name: string): Promise<boolean>
  /** This instance's subscriptions to the channel are now `n` (> 0). */
  count (ns: string, name: string, n: number): void
  /**
   * This instance's last subscriber left: true when no other instance has one
   * (vacated). Never rejects: while Redis cannot be told, the entry is removed
   * when it is back, without an event.
   */
  vacate (ns: string, name: string): Promise<boolean>
  /**
   * A member's first local session: `added` when it was on no instance,
   * `present` when it was, `full` (nothing written) when the channel already
   * has `max` distinct members on all instances.
   */
  join (ns: string, name: string, key: string, info: unknown, max?: number): Promise<JoinOutcome>
  /** A member's last local session left: true when it is now on no instance. Never rejects (as `vacate`). */
  leave (ns: string, name: string, key: string): Promise<boolean>
  /** The channel's members on the other live instances, with their info. */
  members (ns: string, name: string): Promise<Map<string, unknown>>
  /** Subscriptions to the channel on the other live instances. */
  subscriptions (ns: string, name: string): Promise<number>
  /** The namespace's channels occupied on the other live instances. */
  channels (ns: string): Promise<Set<string>>
  /** The members and subscriptions of crashed instances, removed once across the cluster, go to `fn` on the instance that removed them. */
  onGone (ns: string, fn: PresenceGoneHandler): void
}

/** One instance: its own transitions are the cluster's; nobody else holds members. */
export class LocalPresence implements Presence {
  readonly kind = 'local'
  async occupy (): Promise<boolean> { return true }
  count (): void {}
  async vacate (): Promise<boolean> { return true }
  async join (): Promise<JoinOutcome> { return 'added' }
  async leave (): Promise<boolean> { return true }
  async members (): Promise<Map<string, unknown>> { return new Map() }
  async subscriptions (): Promise<number> { return 0 }
  async channels (): Promise<Set<string>> { return new Set() }
  onGone (): void {}
}

/*
 * Keys. Per channel, in one hash slot (`{<ns>:<name>}`):
 *   s  hash serverId → that instance's subscriptions (occupancy)
 *   u  hash "<serverId>|<member key>" → 1: a member with a session on that instance
 *   c  hash member key → how many instances it is on
 *   i  hash member key → its info (JSON)
 * Per instance:
 *   sb:presence:idx:<serverId>  set of "<ns>\n<name>": the channels it holds, for the sweep of a crash
 *   sb:instances                hash serverId → start time: the instances that may hold entries
 * Server ids are UUIDs (no `|`). Whoever adds a channel's first `s` field
 * fires occupied, whoever removes its last vacated; the same for a member's
 * first and last instance (c). Each is one atomic script, so each event fires
 * once. A crashed instance's fields stay until one live instance claims it (its
 * `sb:instances` field, removed by one HDEL) and sweeps the channels of its
 * index, firing what their removal means. Reads leave out dead instances at
 * once; this instance rewrites its own entries whenever Redis lost them.
 * On a Redis Cluster the index lives on another slot than the channel, so it
 * is written beside the script: added before a channel is occupied, removed
 * after it is vacated (a crash between leaves an index entry whose sweep finds
 * nothing, never a channel entry the sweep cannot find).
 */
const entryOf = (ns: string, name: string) => `${ns}\n${name}`

/** KEYS: s, idx; ARGV: me, entry. 1 when no instance had a subscription before (occupied). */
const OCCUPY = `
local others = redis.call('HLEN', KEYS[1]) - redis.call('HEXISTS', KEYS[1], ARGV[1])
redis.call('HSETNX', KEYS[1], ARGV[1], 1)
redis.call('SADD', KEYS[2], ARGV[2])
if others == 0 then return 1 end
return 0`

/** Redis Cluster: OCCUPY and VACATE on the channel's key alone (KEYS: s; ARGV: me); the index is written beside. */
const OCCUPY_CHANNEL = `
local others = redis.call('HLEN', KEYS[1]) - redis.call('HEXISTS', KEYS[1], ARGV[1])
redis.call('HSETNX', KEYS[1], ARGV[1], 1)
if others == 0 then return 1 end
return 0`
const VACATE_CHANNEL = `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0`

/** KEYS: s, idx; ARGV: me, entry. 1 when this removed the last instance's subscriptions (vacated). */
const VACATE = `
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0`

/** KEYS: u, c, i; ARGV: me, key, info, max (0: none). 1 added, 0 present, 2 full. */
const JOIN = `
local field = ARGV[1] .. '|' .. ARGV[2]
local exists = redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1
if redis.call('HEXISTS', KEYS[1], field) == 1 then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  return 0
end
local max = tonumber(ARGV[4])
if not exists and max > 0 and redis.call('HLEN', KEYS[2]) >= max then return 2 end
redis.call('HSET', KEYS[1], field, 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
if exists then return 0 end
return 1`

/** KEYS: u, c, i; ARGV: me, key. 1 when this removed the member's last instance. */
const LEAVE = `
if redis.call('HDEL', KEYS[1], ARGV[1] .. '|' .. ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1`

/**
 * KEYS: s, u, c, i; ARGV: dead serverId. Removes the dead instance's
 * subscriptions and members; returns {vacated (1/0), key, info, key, info, ...}
 * for the members now on no instance.
 */
const SWEEP_CHANNEL = `
local dead = ARGV[1]
local vacated = 0
if redis.call('HDEL', KEYS[1], dead) == 1 and redis.call('HLEN', KEYS[1]) == 0 then vacated = 1 end
local out = {vacated}
local prefix = dead .. '|'
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(field, 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[2], field)
    local key = string.sub(field, #prefix + 1)
    if redis.call('HINCRBY', KEYS[3], key, -1) <= 0 then
      redis.call('HDEL', KEYS[3], key)
      table.insert(out, key)
      table.insert(out, redis.call('HGET', KEYS[4], key) or '')
      redis.call('HDEL', KEYS[4], key)
    end
  end
end
return out`

interface Scripts {
  sbOccupyChannel (s: string, me: string): Promise<number>
  sbVacateChannel (s: string, me: string): Promise<number>
  sbOccupy (s: string, idx: string, me: string, entry: string): Promise<number>
  sbVacate (s: string, idx: string, me: string, entry: string): Promise<number>
  sbJoin (u: string, c: string, i: string, me: string, key: string, info: string, max: number): Promise<number>
  sbLeave (u: string, c: string, i: string, me: string, key: string): Promise<number>
  sbSweepChannel (s: string, u: string, c: string, i: string, dead: string): Promise<Array<number | string>>
}

type ScriptedTx = ChainableCommander & {
  sbJoin (u: string, c: string, i: string, me: string, key: string, info: string, max: number): ChainableCommander
  sbLeave (u: string, c: string, i: string, me: string, key: string): ChainableCommander
  sbVacate (s: string, idx: string, me: string, entry: string): ChainableCommander
  sbVacateChannel (s: string, me: string): ChainableCommander
}

function parseInfo (json: string | null | undefined): unknown {
  if (json === undefined || json === null || json === '') return undefined
  try {
    return JSON.parse(json)
  } catch {
    return undefined
  }
}

/** What this instance holds of one channel: rewritten to Redis whenever Redis lost it. */
interface LocalChannel { subscriptions: number, members: Map<string, unknown> }

interface Log {
  info: (o: object, m: string) => void
  warn: (o: object, m: string) => void
}

/** Presence in Redis: each instance writes only its own fields; what it holds is kept here (the truth). */
export class RedisPresence implements Presence {
  readonly kind = 'redis'
  private readonly scripts: Scripts
  private readonly me: string
  private readonly handlers = new Map<string, PresenceGoneHandler>()
  /** `<ns>\n<name>` → what this instance holds there. */
  private readonly local = new Map<string, LocalChannel>()
  /** Departures Redis may have missed (it was down, or the write failed): written by the restore, without events. */
  private stale = new Map<string, { vacated: boolean, left: Set<string> }>()
  private restoring: Map<string, { vacated: boolean, left: Set<string> }> | null = null
  private sweeping = false
  private readonly prefix: string
  /** Every instance that may hold entries (`<prefix>instances`). */
  private readonly instances: string

  constructor (private readonly link: RedisLink, private readonly log: Log) {
    const c = link.commands
    c.defineCommand('sbOccupy', { numberOfKeys: 2, lua: OCCUPY })
    c.defineCommand('sbVacate', { numberOfKeys: 2, lua: VACATE })
    c.defineCommand('sbJoin', { numberOfKeys: 3, lua: JOIN })
    c.defineCommand('sbLeave', { numberOfKeys: 3, lua: LEAVE })
    c.defineCommand('sbSweepChannel', { numberOfKeys: 4, lua: SWEEP_CHANNEL })
    c.defineCommand('sbOccupyChannel', { numberOfKeys: 1, lua: OCCUPY_CHANNEL })
    c.defineCommand('sbVacateChannel', { numberOfKeys: 1, lua: VACATE_CHANNEL })
    this.scripts = c as unknown as Scripts
    this.me = link.serverId
    this.prefix = link.prefix
    this.instances = `${link.prefix}instances`
    link.addRestorer({ write: tx => this.rewrite(tx), written: ok => this.rewritten(ok) })
    link.onBeat(() => { this.sweep().catch(() => {}) })
  }

  /** The keys of one channel, in one hash slot (`{<ns>:<name>}`). */
  private channelKey (ns: string, name: string, part: 's' | 'u' | 'c' | 'i'): string {
    return `${this.prefix}presence:{${ns}:${name}}:${part}`
  }

  private indexKey (serverId: string): string {
    return `${this.prefix}presence:idx:${serverId}`
  }

  private get commands (): Redis {
    return this.link.commands
  }

  onGone (ns: string, fn: PresenceGoneHandler): void {
    if (this.handlers.has(ns)) throw new Error(`namespace ${ns} already has a presence handler`)
    this.handlers.set(ns, fn)
  }

  private held (ns: string, name: string): LocalChannel {
    const entry = entryOf(ns, name)
    let held = this.local.get(entry)
    if (!held) this.local.set(entry, held = { subscriptions: 0, members: new Map() })
    return held
  }

  private forget (ns: string, name: string): void {
    const entry = entryOf(ns, name)
    const held = this.local.get(entry)
    if (held && held.subscriptions === 0 && held.members.size === 0) this.local.delete(entry)
  }

  async occupy (ns: string, name: string): Promise<boolean> {
    this.held(ns, name).subscriptions = Math.max(1, this.held(ns, name).subscriptions)
    this.link.requireReady()
    if (this.link.cluster) {
      await this.commands.sadd(this.indexKey(this.me), entryOf(ns, name))
      return await this.scripts.sbOccupyChannel(this.channelKey(ns, name, 's'), this.me) === 1
    }
    return await this.scripts.sbOccupy(this.channelKey(ns, name, 's'), this.indexKey(this.me), this.me, entryOf(ns, name)) === 1
  }

  count (ns: string, name: string, n: number): void {
    this.held(ns, name).subscriptions = n
    if (!this.link.ready) return
    this.commands.hset(this.channelKey(ns, name, 's'), this.me, n).catch(() => {})
  }

  async vacate (ns: string, name: string): Promise<boolean> {
    this.held(ns, name).subscriptions = 0
    this.forget(ns, name)
    try {
      this.link.requireReady()
      if (this.link.cluster) {
        const vacated = await this.scripts.sbVacateChannel(this.channelKey(ns, name, 's'), this.me) === 1
        await this.commands.srem(this.indexKey(this.me), entryOf(ns, name))
        return vacated
      }
      return await this.scripts.sbVacate(this.channelKey(ns, name, 's'), this.indexKey(this.me), this.me, entryOf(ns, name)) === 1
    } catch {
      this.staleOf(ns, name).vacated = true
      return false
    }
  }

  private staleOf (ns: string, name: string): { vacated: boolean, left: Set<string> } {
    const entry = entryOf(ns, name)
    let found = this.stale.get(entry)
    if (!found) this.stale.set(entry, found = { vacated: false, left: new Set() })
    return found
  }

  async join (ns: string, name: string, key: string, info: unknown, max = 0): Promise<JoinOutcome> {
    this.link.requireReady()
    const outcome = await this.scripts.sbJoin(this.channelKey(ns, name, 'u'), this.channelKey(ns, name, 'c'), this.channelKey(ns, name, 'i'), this.me, key, info === undefined ? '' : JSON.stringify(info), max)
    if (outcome === 2) return 'full'
    this.held(ns, name).members.set(key, info)
    return outcome === 1 ? 'added' : 'present'
  }

  async leave (ns: string, name: string, key: string): Promise<boolean> {
    this.held(ns, name).members.delete(key)
    this.forget(ns, name)
    try {
      this.link.requireReady()
      return await this.scripts.sbLeave(this.channelKey(ns, name, 'u'), this.channelKey(ns, name, 'c'), this.channelKey(ns, name, 'i'), this.me, key) === 1
    } catch {
      this.staleOf(ns, name).left.add(key)
      return false
    }
  }

  /** The instances among `servers` whose heartbeat key exists, this one left out. */
  private async live (servers: Iterable<string>): Promise<Set<string>> {
    const others = [...new Set(servers)].filter(s => s !== this.me)
    const alive = new Set<string>()
    if (others.length === 0) return alive
    if (this.link.cluster) {
      // heartbeat keys sit on many slots: one EXISTS each, auto-pipelined per shard
      const found = await Promise.all(others.map(s => this.commands.exists(instanceKey(this.prefix, s))))
      others.forEach((s, n) => { if (found[n] === 1) alive.add(s) })
      return alive
    }
    const tx = this.commands.pipeline()
    for (const s of others) tx.exists(instanceKey(this.prefix, s))
    const found = await tx.exec()
    others.forEach((s, n) => { if (found?.[n]?.[1] === 1) alive.add(s) })
    return alive
  }

  async members (ns: string, name: string): Promise<Map<string, unknown>> {
    this.link.requireReady()
    const [fields, infos] = await Promise.all([
      this.commands.hkeys(this.channelKey(ns, name, 'u')),
      this.commands.hgetall(this.channelKey(ns, name, 'i'))
    ])
    const pairs = fields.map(f => [f.slice(0, f.indexOf('|')), f.slice(f.indexOf('|') + 1)] as const)
    const alive = await this.live(pairs.map(([server]) => server))
    const out = new Map<string, unknown>()
    for (const [server, key] of pairs) if (alive.has(server)) out.set(key, parseInfo(infos[key]))
    return out
  }

  async subscriptions (ns: string, name: string): Promise<number> {
    this.link.requireReady()
    const counts = await this.commands.hgetall(this.channelKey(ns, name, 's'))
    const alive = await this.live(Object.keys(counts))
    let n = 0
    for (const [server, count] of Object.entries(counts)) if (alive.has(server)) n += Number(count)
    return n
  }

  async channels (ns: string): Promise<Set<string>> {
    this.link.requireReady()
    const alive = await this.live(await this.commands.hkeys(this.instances))
    const out = new Set<string>()
    if (alive.size === 0) return out
    const prefix = `${ns}\n`
    let lists: Array<string[] | null>
    if (this.link.cluster) {
      lists = await Promise.all([...alive].map(s => this.commands.smembers(this.indexKey(s))))
    } else {
      const tx = this.commands.pipeline()
      for (const s of alive) tx.smembers(this.indexKey(s))
      lists = (await tx.exec() ?? []).map(([, entries]) => entries as string[] | null)
    }
    for (const entries of lists) {
      for (const entry of entries ?? []) if (entry.startsWith(prefix)) out.add(entry.slice(prefix.length))
    }
    return out
  }

  /**
   * On every heartbeat: the instances whose heartbeat key expired are claimed
   * one at a time (one HDEL wins across the cluster) and their channels swept;
   * what each removal means fires here, once.
   */
  private async sweep (): Promise<void> {
    if (this.sweeping || !this.link.ready) return
    this.sweeping = true
    try {
      const servers = (await this.commands.hkeys(this.instances)).filter(s => s !== this.me)
      if (servers.length === 0) return
      const alive = await this.live(servers)
      for (const dead of servers) {
        if (alive.has(dead)) continue
        if (await this.commands.hdel(this.instances, dead) !== 1) continue // another instance claimed it
        await this.sweepInstance(dead)
        await this.link.instanceGone(dead)
      }
    } catch (err) {
      this.log.warn({ event: 'presence.sweep_failed', reason: (err as Error).message }, 'a crashed instance\'s channels could not be swept; the next heartbeat tries again')
    } finally {
      this.sweeping = false
    }
  }

  private async sweepInstance (dead: string): Promise<void> {
    const entries = await this.commands.smembers(this.indexKey(dead))
    let swept = 0
    for (const entry of entries) {
      const cut = entry.indexOf('\n')
      const ns = entry.slice(0, cut)
      const name = entry.slice(cut + 1)
      const res = await this.scripts.sbSweepChannel(this.channelKey(ns, name, 's'), this.channelKey(ns, name, 'u'), this.channelKey(ns, name, 'c'), this.channelKey(ns, name, 'i'), dead)
      const gone: Array<{ key: string, info: unknown }> = []
      for (let n = 1; n + 1 < res.length; n += 2) gone.push({ key: String(res[n]), info: parseInfo(String(res[n + 1])) })
      const vacated = res[0] === 1
      if (gone.length > 0 || vacated) {
        swept++
        this.handlers.get(ns)?.(name, gone, vacated)
      }
    }
    await this.commands.del(this.indexKey(dead))
    this.log.info({ event: 'presence.instance_swept', serverId: dead, channels: entries.length, changed: swept }, 'a crashed instance\'s subscriptions and members left their channels')
  }

  /** On shutdown: this instance's entries leave Redis (its sessions have left their channels already). */
  withdraw (tx: ChainableCommander): void {
    for (const [entry, held] of this.local) {
      const cut = entry.indexOf('\n')
      const ns = entry.slice(0, cut)
      const name = entry.slice(cut + 1)
      tx.hdel(this.channelKey(ns, name, 's'), this.me)
      for (const key of held.members.keys()) tx.hdel(this.channelKey(ns, name, 'u'), `${this.me}|${key}`)
    }
    tx.del(this.indexKey(this.me))
    tx.hdel(this.instances, this.me)
  }

  /**
   * This instance's entries as they are now, in the transaction that rewrites
   * its heartbeat: whenever Redis is back or lost the heartbeat key (a flushed
   * or replaced Redis; a stall past the TTL after which another instance swept
   * this one). No event fires for them.
   */
  private rewrite (tx: ChainableCommander): void {
    tx.hset(this.instances, this.me, String(Date.now()))
    const scripted = tx as ScriptedTx
    for (const [entry, held] of this.local) {
      const cut = entry.indexOf('\n')
      const ns = entry.slice(0, cut)
      const name = entry.slice(cut + 1)
      if (held.subscriptions > 0) {
        tx.hset(this.channelKey(ns, name, 's'), this.me, held.subscriptions)
        tx.sadd(this.indexKey(this.me), entry)
      }
      for (const [key, info] of held.members) {
        scripted.sbJoin(this.channelKey(ns, name, 'u'), this.channelKey(ns, name, 'c'), this.channelKey(ns, name, 'i'), this.me, key, info === undefined ? '' : JSON.stringify(info), 0)
      }
    }
    for (const [entry, { vacated, left }] of this.stale) {
      const cut = entry.indexOf('\n')
      const ns = entry.slice(0, cut)
      const name = entry.slice(cut + 1)
      const held = this.local.get(entry)
      for (const key of left) if (!held?.members.has(key)) scripted.sbLeave(this.channelKey(ns, name, 'u'), this.channelKey(ns, name, 'c'), this.channelKey(ns, name, 'i'), this.me, key)
      if (vacated && (held === undefined || held.subscriptions === 0)) {
        if (this.link.cluster) scripted.sbVacateChannel(this.channelKey(ns, name, 's'), this.me).srem(this.indexKey(this.me), entry)
        else scripted.sbVacate(this.channelKey(ns, name, 's'), this.indexKey(this.me), this.me, entry)
      }
    }
    this.restoring = this.stale
    this.stale = new Map()
  }

  private rewritten (ok: boolean): void {
    const taken = this.restoring
    this.restoring = null
    if (ok || taken === null) return
    for (const [entry, { vacated, left }] of taken) {
      const cut = entry.indexOf('\n')
      const found = this.staleOf(entry.slice(0, cut), entry.slice(cut + 1))
      found.vacated ||= vacated
      for (const key of left) found.left.add(key)
    }
  }
}

export { RedisUnavailableError }
