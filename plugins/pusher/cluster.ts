import type { RedisLink } from './deps.js'

export interface ClusterMember { userId: string | number, info: unknown }

/**
 * What the instances agree on for a Pusher channel: whether it is occupied
 * anywhere and who its presence members are. Each instance reports its own
 * transitions (its first/last local subscriber, a user's first/last local
 * socket); the answer says whether that transition is also the cluster's, so
 * occupied/vacated and member events are decided once across all instances.
 */
export interface ClusterState {
  /** This instance's first subscriber: true when no other instance had one (occupied). */
  channelJoined (appId: string, channel: string): Promise<boolean>
  /** This instance's last subscriber left: true when no other instance has one (vacated). */
  channelLeft (appId: string, channel: string): Promise<boolean>
  /** A user's first socket here: true when the user was on no other instance (member_added). */
  memberJoined (appId: string, channel: string, key: string, member: ClusterMember): Promise<boolean>
  /** A user's last socket here left: true when the user is on no other instance (member_removed). */
  memberLeft (appId: string, channel: string, key: string): Promise<boolean>
  /** The channel's members on every instance, or null when only this instance counts. */
  members (appId: string, channel: string): Promise<Map<string, ClusterMember> | null>
}

/** One instance: its own transitions are the cluster's. */
export class LocalClusterState implements ClusterState {
  async channelJoined (): Promise<boolean> { return true }
  async channelLeft (): Promise<boolean> { return true }
  async memberJoined (): Promise<boolean> { return true }
  async memberLeft (): Promise<boolean> { return true }
  async members (): Promise<null> { return null }
}

const key = (appId: string, channel: string, part: string) => `sb:pusher:{${appId}:${channel}}:${part}`

/** Decrement a hash field and delete it (and the member's info) at 0, atomically; returns the new count. */
const LEAVE = `
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return n`

/**
 * Counts in Redis, changed atomically (INCR/DECR, HINCRBY): the instance whose
 * change moves a count from 0 to 1, or from 1 to 0, fires the event. A crashed
 * instance's counts are not swept (see docs/pusher.md).
 */
export class RedisClusterState implements ClusterState {
  constructor (private readonly link: RedisLink) {
    link.commands.defineCommand('sbPusherLeave', { numberOfKeys: 2, lua: LEAVE })
  }

  async channelJoined (appId: string, channel: string): Promise<boolean> {
    return await this.link.commands.incr(key(appId, channel, 'n')) === 1
  }

  async channelLeft (appId: string, channel: string): Promise<boolean> {
    // the key stays at 0 (a DEL here could erase another instance's INCR in between)
    return await this.link.commands.decr(key(appId, channel, 'n')) <= 0
  }

  async memberJoined (appId: string, channel: string, userKey: string, member: ClusterMember): Promise<boolean> {
    const [[, n]] = await this.link.commands.multi()
      .hincrby(key(appId, channel, 'u'), userKey, 1)
      .hset(key(appId, channel, 'i'), userKey, JSON.stringify(member))
      .exec() as Array<[Error | null, number]>
    return n === 1
  }

  async memberLeft (appId: string, channel: string, userKey: string): Promise<boolean> {
    const commands = this.link.commands as unknown as { sbPusherLeave (k1: string, k2: string, field: string): Promise<number> }
    return await commands.sbPusherLeave(key(appId, channel, 'u'), key(appId, channel, 'i'), userKey) <= 0
  }

  async members (appId: string, channel: string): Promise<Map<string, ClusterMember>> {
    const all = await this.link.commands.hgetall(key(appId, channel, 'i'))
    return new Map(Object.entries(all).map(([k, v]) => [k, JSON.parse(v) as ClusterMember]))
  }
}
