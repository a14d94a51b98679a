import { textFrame } from '../deps.js'

/** What the registry needs of a subscriber: its socket id and a way to send it a WebSocket text frame built once. */
export interface Subscriber {
  readonly socketId: string
  sendFrame (frame: Buffer): void
}

/** A user on a presence channel: the user_id as given (a number stays a number), its info, and its local sockets. */
export interface Member {
  userId: string | number
  info: unknown
  sockets: number
}

export class Channel {
  readonly subscribers = new Set<Subscriber>()
  /** Presence channels only: members by String(user_id). */
  readonly members = new Map<string, Member>()
  constructor (readonly name: string) {}
}

/** The registry's local transitions: the runtime turns them into the cluster's (presence) and its events. */
export interface ChannelEvents {
  /** The channel's first subscriber here. */
  occupied (channel: string): void
  /** The channel's last subscriber here left. */
  vacated (channel: string): void
  /** The channel's subscribers here are now `n` (> 0) after a change that was neither occupied nor vacated. */
  counted? (channel: string, n: number): void
  /** The user's first socket here signed in: events to the user reach this instance from now on. */
  userArrived? (userId: string): void
  /** The user's last socket here signed out or closed. */
  userLeft? (userId: string): void
}

export const isPresence = (name: string) => name.startsWith('presence-')
export const isPrivate = (name: string) => name.startsWith('private-')
export const isEncrypted = (name: string) => name.startsWith('private-encrypted-')
export const isCache = (name: string) => /^(private-encrypted-|private-|presence-)?cache-/.test(name)
export const USER_CHANNEL_PREFIX = '#server-to-user-'

/**
 * The channels of one Pusher app on this instance: who subscribes, presence
 * members counted per user (a user's first socket adds the member, its last
 * removes it), and the sockets signed in as each user. What a local change
 * means across the instances is the runtime's (presence).
 */
export class ChannelRegistry {
  private readonly channels = new Map<string, Channel>()
  private readonly users = new Map<string, Set<Subscriber>>()

  constructor (private readonly events: ChannelEvents) {}

  get size (): number {
    return this.channels.size
  }

  get (name: string): Channel | undefined {
    return this.channels.get(name)
  }

  all (): IterableIterator<Channel> {
    return this.channels.values()
  }

  /** Members of a presence channel here (for the member cap). */
  memberCount (name: string): number {
    return this.channels.get(name)?.members.size ?? 0
  }

  /** Whether the user has a socket here in the presence channel. */
  hasMember (name: string, userKey: string): boolean {
    return this.channels.get(name)?.members.has(userKey) ?? false
  }

  /**
   * Adds the subscriber; on a presence channel `member` is its user. Returns
   * whether this added the user as a new member here (its first socket).
   */
  subscribe (sub: Subscriber, name: string, member?: { userId: string | number, info: unknown }): boolean {
    let channel = this.channels.get(name)
    if (!channel) {
      channel = new Channel(name)
      this.channels.set(name, channel)
    }
    if (channel.subscribers.has(sub)) return false
    const first = channel.subscribers.size === 0
    channel.subscribers.add(sub)
    if (first) this.events.occupied(name)
    else this.events.counted?.(name, channel.subscribers.size)
    if (!member) return false
    const key = String(member.userId)
    const existing = channel.members.get(key)
    if (existing) {
      existing.sockets++
      return false
    }
    channel.members.set(key, { userId: member.userId, info: member.info, sockets: 1 })
    return true
  }

  /** Removes the subscriber; returns the member that left here for good (its last socket), if any. */
  unsubscribe (sub: Subscriber, name: string, userKey?: string): Member | undefined {
    const channel = this.channels.get(name)
    if (!channel?.subscribers.delete(sub)) return undefined
    let gone: Member | undefined
    if (userKey !== undefined) {
      const member = channel.members.get(userKey)
      if (member && --member.sockets === 0) {
        channel.members.delete(userKey)
        gone = member
      }
    }
    if (channel.subscribers.size === 0) {
      this.channels.delete(name)
      this.events.vacated(name)
    } else {
      this.events.counted?.(name, channel.subscribers.size)
    }
    return gone
  }

  /**
   * Sends one serialized frame to every subscriber of the channel but
   * `exceptSocketId`; returns how many it reached. `#server-to-user-<id>` also
   * reaches the sockets signed in as the user that have not subscribed to it
   * (yet): Pusher delivers events to a user's signed-in connections.
   */
  broadcast (name: string, payload: string, exceptSocketId?: string): number {
    const channel = this.channels.get(name)
    const user = name.startsWith(USER_CHANNEL_PREFIX) ? this.users.get(name.slice(USER_CHANNEL_PREFIX.length)) : undefined
    if (!channel && !user) return 0
    // framed once for every subscriber: given a string, ws would encode it and build a header per socket
    const frame = textFrame(payload)
    let n = 0
    for (const sub of channel?.subscribers ?? []) {
      if (sub.socketId === exceptSocketId) continue
      sub.sendFrame(frame)
      n++
    }
    for (const sub of user ?? []) {
      if (sub.socketId === exceptSocketId || channel?.subscribers.has(sub) === true) continue
      sub.sendFrame(frame)
      n++
    }
    return n
  }

  signedIn (userId: string, sub: Subscriber): void {
    let set = this.users.get(userId)
    if (!set) {
      set = new Set()
      this.users.set(userId, set)
      this.events.userArrived?.(userId)
    }
    set.add(sub)
  }

  signedOut (userId: string, sub: Subscriber): void {
    const set = this.users.get(userId)
    if (!set?.delete(sub)) return
    if (set.size === 0) {
      this.users.delete(userId)
      this.events.userLeft?.(userId)
    }
  }

  socketsOf (userId: string): Subscriber[] {
    return [...(this.users.get(userId) ?? [])]
  }
}
