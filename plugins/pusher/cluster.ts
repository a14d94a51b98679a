import { instanceKey, type RedisLink } from './deps.js'

export interface ClusterMember { userId: string | number, info: unknown }

/** What a sweep of a crashed instance's entries found for one channel: members now gone everywhere, and whether it is now vacant. */
export interface SweptChannel {
  channel: string
  gone: Array<{ key: string, member: ClusterMember }>
  vacated: boolean
}

/**
 * What the instances agree on for a Pusher channel: whether it is occupied
 * anywhere, by how many subscriptions, who its presence members are, its last
 * cached event. Each instance reports its own transitions (its first/last
 * local subscriber, a user's first/last local socket); the answer says whether
 * that transition is also the cluster's, so occupied/vacated and member events
 * are decided once across all instances.
 *
 * The reads answer null (or undefined) when only this instance counts: the
 * caller then uses its own registry.
 */
export interface ClusterState {
  /** This instance's first subscriber: true when no other instance had one (occupied). */
  channelJoined (appId: string, channel: string): Promise<boolean>
  /** This instance's subscriptions to the channel are now `n` (> 0), after a change that was no transition. */
  channelCount (appId: string, channel: string, n: number): void
  /** This instance's last subscriber left: true when no other instance has one (vacated). */
  channelLeft (appId: string, channel: string): Promise<boolean>
  /** A user's first socket here: true when the user was on no other instance (member_added). */
  memberJoined (appId: string, channel: string, key: string, member: ClusterMember): Promise<boolean>
  /** A user's last socket here left: true when the user is on no other instance (member_removed). */
  memberLeft (appId: string, channel: string, key: string): Promise<boolean>
  /** The channel's members on every live instance. */
  members (appId: string, channel: string): Promise<Map<string, ClusterMember> | null>
  /** Subscriptions to the channel on every live instance. */
  subscriptionCount (appId: string, channel: string): Promise<number | null>
  /** The channels occupied on some live instance. */
  channels (appId: string): Promise<Set<string> | null>
  /** A cache channel's last event, for every instance (kept `ttlMs`). */
  remember (appId: string, channel: string, event: string, data: string, ttlMs: number): void
  /** A cache channel's last event triggered on any instance. */
  cached (appId: string, channel: string): Promise<{ event: string, data: string } | null | undefined>
  /** Removes the entries of instances whose heartbeat expired; each removal is returned to one caller only. */
  sweep (appId: string): Promise<SweptChannel[]>
}

/** One instance: its own transitions are the cluster's, its registry is the truth. */
export class LocalClusterState implements ClusterState {
  async channelJoined (): Promise<boolean> { return true }
  channelCount (): void {}
  async channelLeft (): Promise<boolean> { return true }
  async memberJoined (): Promise<boolean> { return true }
  async memberLeft (): Promise<boolean> { return true }
  async members (): Promise<null> { return null }
  async subscriptionCount (): Promise<null> { return null }
  async channels (): Promise<null> { return null }
  remember (): void {}
  async cached (): Promise<undefined> { return undefined }
  async sweep (): Promise<SweptChannel[]> { return [] }
}

/**
 * Keys. Per channel (one hash slot, `{<app>:<channel>}`):
 *   s  hash serverId → subscriptions there
 *   u  hash "<serverId>|<userKey>" → 1: a user with a socket on that instance
 *   i  hash userKey → {"userId","info"}
 *   c  string {"event","data"}: a cache channel's last event (PX 30 min)
 * Per app (`{<app>}`):
 *   idx hash "<serverId>|<channel>" → 1: the channels each instance holds, for
 *       GET /channels and for the sweep of a crashed instance.
 * Server ids are UUIDs (no `|`); the first `|` splits a field.
 *
 * The event rule: whoever adds a channel's first `s` field fires occupied,
 * whoever removes its last one fires vacated; the same for a user's first and
 * last `u` field (member_added / member_removed). Each is one atomic script,
 * so each event fires once across the instances. A crashed instance's fields
 * stay (the channel counts as occupied, its users as members, for events)
 * until the sweep removes them: then it fires what their removal means. Reads
 * (members, counts, the channel list) leave out dead instances at once.
 */
const key = (appId: string, channel: string, part: string) => `sb:pusher:{${appId}:${channel}}:${part}`
const indexKey = (appId: string) => `sb:pusher:{${appId}}:idx`

const SPLIT = `
local function split (f)
  local p = string.find(f, '|', 1, true)
  return string.sub(f, 1, p - 1), string.sub(f, p + 1)
end
local function hasUser (key, user, except)
  for _, f in ipairs(redis.call('HKEYS', key)) do
    local _, u = split(f)
    if u == user and f ~= except then return true end
  end
  return false
end`

/** KEYS: s; ARGV: me. Returns 1 when no instance had a subscription before (occupied). */
const CHANNEL_JOIN = `
local others = redis.call('HLEN', KEYS[1]) - redis.call('HEXISTS', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], 1)
if others == 0 then return 1 end
return 0`

/** KEYS: s; ARGV: me. Returns 1 when this removed the last instance's subscriptions (vacated). */
const CHANNEL_LEAVE = `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0`

/** KEYS: u, i; ARGV: me, userKey, member JSON. Returns 1 when the user had no socket on any instance (member_added). */
const MEMBER_JOIN = SPLIT + `
local field = ARGV[1] .. '|' .. ARGV[2]
local other = hasUser(KEYS[1], ARGV[2], field)
redis.call('HSET', KEYS[1], field, 1)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if other then return 0 end
return 1`

/** KEYS: u, i; ARGV: me, userKey. Returns 1 when this removed the user's last socket anywhere (member_removed). */
const MEMBER_LEAVE = SPLIT + `
if redis.call('HDEL', KEYS[1], ARGV[1] .. '|' .. ARGV[2]) == 0 then return 0 end
if hasUser(KEYS[1], ARGV[2], '') then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1`

/** KEYS: idx; ARGV: instance key prefix, me. Removes dead instances' channel entries; returns their channels. */
const SWEEP_INDEX = SPLIT + `
local out, live = {}, {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local server, channel = split(f)
  if server ~= ARGV[2] then
    if live[server] == nil then live[server] = redis.call('EXISTS', ARGV[1] .. server) == 1 end
    if not live[server] then
      redis.call('HDEL', KEYS[1], f)
      table.insert(out, channel)
    end
  end
end
return out`

/**
 * KEYS: s, u, i; ARGV: instance key prefix, me. Removes dead instances'
 * subscriptions and members; returns {vacated (1/0), userKey, member JSON, ...}
 * for the users who have no socket left anywhere.
 */
const SWEEP_CHANNEL = SPLIT + `
local live = {}
local function alive (server)
  if server == ARGV[2] then return true end
  if live[server] == nil then live[server] = redis.call('EXISTS', ARGV[1] .. server) == 1 end
  return live[server]
end
local removed = 0
for _, server in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not alive(server) then
    redis.call('HDEL', KEYS[1], server)
    removed = removed + 1
  end
end
local dead = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
  local server, user = split(f)
  if not alive(server) then
    redis.call('HDEL', KEYS[2], f)
    dead[user] = true
  end
end
local out = {0}
if removed > 0 and redis.call('HLEN', KEYS[1]) == 0 then out[1] = 1 end
for user in pairs(dead) do
  if not hasUser(KEYS[2], user, '') then
    table.insert(out, user)
    table.insert(out, redis.call('HGET', KEYS[3], user) or '')
    redis.call('HDEL', KEYS[3], user)
  end
end
return out`

interface Scripts {
  sbPusherChannelJoin (s: string, me: string): Promise<number>
  sbPusherChannelLeave (s: string, me: string): Promise<number>
  sbPusherMemberJoin (u: string, i: string, me: string, user: string, member: string): Promise<number>
  sbPusherMemberLeave (u: string, i: string, me: string, user: string): Promise<number>
  sbPusherSweepIndex (idx: string, prefix: string, me: string): Promise<string[]>
  sbPusherSweepChannel (s: string, u: string, i: string, prefix: string, me: string): Promise<Array<number | string>>
}

function parseMember (json: string | null | undefined, key: string): ClusterMember {
  try {
    const m = JSON.parse(json ?? '') as ClusterMember
    if (m !== null && typeof m === 'object') return m
  } catch {}
  return { userId: key, info: {} }
}

/** What this instance holds of one channel, for rewriting its Redis entries after Redis lost them. */
export interface LocalChannel {
  appId: string
  channel: string
  subscriptions: number
  members: Array<[string, ClusterMember]>
}

/** The state in Redis, each instance writing only its own fields (see the key list above). */
export class RedisClusterState implements ClusterState {
  private readonly scripts: Scripts
  private readonly me: string

  constructor (private readonly link: RedisLink) {
    const c = link.commands
    c.defineCommand('sbPusherChannelJoin', { numberOfKeys: 1, lua: CHANNEL_JOIN })
    c.defineCommand('sbPusherChannelLeave', { numberOfKeys: 1, lua: CHANNEL_LEAVE })
    c.defineCommand('sbPusherMemberJoin', { numberOfKeys: 2, lua: MEMBER_JOIN })
    c.defineCommand('sbPusherMemberLeave', { numberOfKeys: 2, lua: MEMBER_LEAVE })
    c.defineCommand('sbPusherSweepIndex', { numberOfKeys: 1, lua: SWEEP_INDEX })
    c.defineCommand('sbPusherSweepChannel', { numberOfKeys: 3, lua: SWEEP_CHANNEL })
    this.scripts = c as unknown as Scripts
    this.me = link.serverId
  }

  /**
   * Rewrites this instance's fields (counts, members, index entries) in the
   * transaction that rewrites its heartbeat, whenever Redis is back or lost the
   * heartbeat key (a flushed or replaced Redis; this process stalled past the
   * TTL and another instance swept its entries). No event fires for them.
   */
  restoreFrom (local: () => Iterable<LocalChannel>): void {
    this.link.addRestorer({
      write: tx => {
        for (const { appId, channel, subscriptions, members } of local()) {
          tx.hset(key(appId, channel, 's'), this.me, subscriptions)
          tx.hset(indexKey(appId), `${this.me}|${channel}`, 1)
          for (const [userKey, member] of members) {
            tx.hset(key(appId, channel, 'u'), `${this.me}|${userKey}`, 1)
            tx.hset(key(appId, channel, 'i'), userKey, JSON.stringify(member))
          }
        }
      }
    })
  }

  async channelJoined (appId: string, channel: string): Promise<boolean> {
    // one connection, commands in call order: the index entry and the count land before a later leave's removal
    const [first] = await Promise.all([
      this.scripts.sbPusherChannelJoin(key(appId, channel, 's'), this.me),
      this.link.commands.hset(indexKey(appId), `${this.me}|${channel}`, 1)
    ])
    return first === 1
  }

  channelCount (appId: string, channel: string, n: number): void {
    this.link.commands.hset(key(appId, channel, 's'), this.me, n).catch(() => {})
  }

  async channelLeft (appId: string, channel: string): Promise<boolean> {
    const [last] = await Promise.all([
      this.scripts.sbPusherChannelLeave(key(appId, channel, 's'), this.me),
      this.link.commands.hdel(indexKey(appId), `${this.me}|${channel}`)
    ])
    return last === 1
  }

  async memberJoined (appId: string, channel: string, userKey: string, member: ClusterMember): Promise<boolean> {
    return await this.scripts.sbPusherMemberJoin(key(appId, channel, 'u'), key(appId, channel, 'i'), this.me, userKey, JSON.stringify(member)) === 1
  }

  async memberLeft (appId: string, channel: string, userKey: string): Promise<boolean> {
    return await this.scripts.sbPusherMemberLeave(key(appId, channel, 'u'), key(appId, channel, 'i'), this.me, userKey) === 1
  }

  /** The instances among `servers` whose heartbeat key exists (this one always). */
  private async live (servers: Iterable<string>): Promise<Set<string>> {
    const others = [...new Set(servers)].filter(s => s !== this.me)
    const alive = new Set([this.me])
    if (others.length === 0) return alive
    const tx = this.link.commands.pipeline()
    for (const s of others) tx.exists(instanceKey(s))
    const found = await tx.exec()
    others.forEach((s, n) => { if (found?.[n]?.[1] === 1) alive.add(s) })
    return alive
  }

  async members (appId: string, channel: string): Promise<Map<string, ClusterMember>> {
    const [fields, infos] = await Promise.all([
      this.link.commands.hkeys(key(appId, channel, 'u')),
      this.link.commands.hgetall(key(appId, channel, 'i'))
    ])
    const pairs = fields.map(f => [f.slice(0, f.indexOf('|')), f.slice(f.indexOf('|') + 1)] as const)
    const alive = await this.live(pairs.map(([server]) => server))
    const out = new Map<string, ClusterMember>()
    for (const [server, user] of pairs) if (alive.has(server)) out.set(user, parseMember(infos[user], user))
    return out
  }

  async subscriptionCount (appId: string, channel: string): Promise<number> {
    const counts = await this.link.commands.hgetall(key(appId, channel, 's'))
    const alive = await this.live(Object.keys(counts))
    let n = 0
    for (const [server, count] of Object.entries(counts)) if (alive.has(server)) n += Number(count)
    return n
  }

  async channels (appId: string): Promise<Set<string>> {
    const fields = await this.link.commands.hkeys(indexKey(appId))
    const pairs = fields.map(f => [f.slice(0, f.indexOf('|')), f.slice(f.indexOf('|') + 1)] as const)
    const alive = await this.live(pairs.map(([server]) => server))
    return new Set(pairs.filter(([server]) => alive.has(server)).map(([, channel]) => channel))
  }

  remember (appId: string, channel: string, event: string, data: string, ttlMs: number): void {
    this.link.commands.set(key(appId, channel, 'c'), JSON.stringify({ event, data }), 'PX', ttlMs).catch(() => {})
  }

  async cached (appId: string, channel: string): Promise<{ event: string, data: string } | null> {
    const raw = await this.link.commands.get(key(appId, channel, 'c'))
    if (raw === null) return null
    try {
      const last = JSON.parse(raw) as { event?: unknown, data?: unknown }
      if (typeof last.event === 'string' && typeof last.data === 'string') return { event: last.event, data: last.data }
    } catch {}
    return null
  }

  async sweep (appId: string): Promise<SweptChannel[]> {
    const prefix = instanceKey('')
    const channels = [...new Set(await this.scripts.sbPusherSweepIndex(indexKey(appId), prefix, this.me))]
    const out: SweptChannel[] = []
    for (const channel of channels) {
      const res = await this.scripts.sbPusherSweepChannel(key(appId, channel, 's'), key(appId, channel, 'u'), key(appId, channel, 'i'), prefix, this.me)
      const gone: SweptChannel['gone'] = []
      for (let n = 1; n + 1 < res.length; n += 2) gone.push({ key: String(res[n]), member: parseMember(String(res[n + 1]), String(res[n])) })
      out.push({ channel, gone, vacated: res[0] === 1 })
    }
    return out
  }
}
