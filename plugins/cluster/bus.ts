import type { ChainableCommander, Redis } from 'ioredis'
import { WsError } from '../../protocol/errors.js'
import type { ClientFrameHandler, Fanout, MembersGoneHandler, RoomFrameHandler } from './fanout.js'
import { KEY_PREFIX, SWEEP_DEAD_INSTANCES, instanceKey, type RedisLink } from '../core/redis.js'

/*
 * Channels (one plain SUBSCRIBE each):
 *   sb:ch:room:<room>       while a local connection is in the room (or joining it)
 *   sb:ch:server:<serverId> always: direct messages for clients connected to that instance
 * A room payload is "<origin serverId>\n<connection id to skip or empty>\n<frame>",
 * repeated "\n<skip>\n<frame>" for the further frames of the same event-loop turn
 * (a serialized JSON frame never holds a raw newline),
 * a server payload "<origin serverId>\n<clientId>\n<frame>": the frame is the
 * already-serialized JSON every recipient gets, so nobody re-serializes it,
 * and the origin skips its own room copy (it delivered locally).
 *
 * Keys:
 *   sb:members:<room>   hash "<serverId>|<clientId>" → 1: presence across instances
 *   sb:conns:<clientId> hash serverId → open connections there: `delivered` across instances
 * Entries of an instance whose heartbeat key expired are ignored and removed
 * by the scripts that read them, so a crashed instance leaves nothing behind;
 * the script that removes a room's dead members returns them, and the instance
 * that ran it announces their `leave`. An instance rewrites its heartbeat and
 * its entries in one MULTI when Redis is back (RedisLink.restore).
 */

const roomChannel = (room: string) => `${KEY_PREFIX}ch:room:${room}`
const serverChannel = (serverId: string) => `${KEY_PREFIX}ch:server:${serverId}`
const membersKey = (room: string) => `${KEY_PREFIX}members:${room}`
const connsKey = (clientId: string) => `${KEY_PREFIX}conns:${clientId}`
const ROOM_PREFIX = roomChannel('')
const SERVER_PREFIX = serverChannel('')
const INSTANCE_PREFIX = instanceKey('')

/** The room's members on other live instances, and those of dead instances (removed). */
const LIVE_MEMBERS = SWEEP_DEAD_INSTANCES + `
-- a field is "<serverId>|<clientId>"
local function clientOf (field) return string.sub(field, string.find(field, '|', 1, true) + 1) end
local entries, goneFields = sweepDead(KEYS[1], ARGV[1], ARGV[2], function (field) return string.sub(field, 1, string.find(field, '|', 1, true) - 1) end, false)
local live, gone = {}, {}
for _, entry in ipairs(entries) do table.insert(live, clientOf(entry[1])) end
for _, field in ipairs(goneFields) do table.insert(gone, clientOf(field)) end
return {live, gone}`

/**
 * Publishes to each other live instance holding connections of the client and
 * counts those connections only where the PUBLISH reached a subscriber: an
 * instance that died (its socket closed) or lost Redis counts 0 and its entry
 * goes (it rewrites it when it is back).
 */
const PUBLISH_TO_CLIENT = SWEEP_DEAD_INSTANCES + `
local live = sweepDead(KEYS[1], ARGV[1], ARGV[2], function (field) return field end, false)
local reached = 0
for _, entry in ipairs(live) do
  if redis.call('PUBLISH', ARGV[3] .. entry[3], ARGV[4]) > 0 then
    reached = reached + tonumber(entry[2])
  else
    redis.call('HDEL', KEYS[1], entry[1])
  end
end
return reached`

interface Scripts {
  sbLiveMembers (key: string, me: string, prefix: string): Promise<[string[], string[]]>
  sbPublishToClient (key: string, me: string, prefix: string, channelPrefix: string, payload: string): Promise<number>
}

interface Subscription { count: number, subscribed: Promise<void> }

interface Log {
  info: (o: object, m: string) => void
  warn: (o: object, m: string) => void
  error: (o: object, m: string) => void
  debug: (o: object, m: string) => void
}

/** An error that the dispatcher answers as `unavailable` and Fastify as 503. */
function unavailable (message: string): WsError {
  return Object.assign(new WsError('unavailable', message), { statusCode: 503 })
}

/**
 * The Redis fanout: reference-counted room subscriptions, one channel per
 * instance for direct messages, and this instance's presence and connection
 * counts in Redis. What this instance holds is kept here (the truth); a write
 * Redis missed marks its key, and the restore rewrites those and everything else.
 */
export class Bus implements Fanout {
  readonly kind = 'redis'
  /** Frames received from other instances, for status and tests. */
  readonly received = { room: 0, client: 0 }
  private readonly subscriptions = new Map<string, Subscription>()
  /** room → client ids with a connection here in the room (what sb:members holds for this instance). */
  private readonly localMembers = new Map<string, Set<string>>()
  /** clientId → connections here (what sb:conns holds for this instance). */
  private readonly localConnections = new Map<string, number>()
  /** Entries whose write Redis may have missed: rewritten (or removed) by the restore. */
  private readonly staleMembers = new Map<string, Set<string>>()
  private readonly staleConnections = new Set<string>()
  /** The stale entries the restore in flight removes; given back if it fails. */
  private restoring: { members: Map<string, Set<string>>, connections: Set<string> } | null = null
  /** Settles once this instance's channel subscription was last attempted: a count is written only after it. */
  private serverSubscribed: Promise<void>
  private firstSubscribed: () => void = () => {}
  private readonly commands: Redis & Scripts
  private readonly roomHandlers: RoomFrameHandler[] = []
  private readonly clientHandlers: ClientFrameHandler[] = []
  private readonly goneHandlers: MembersGoneHandler[] = []
  /** room → [except, frame, except, frame, …] queued this event-loop turn (publishToRoom). */
  private readonly outbox = new Map<string, string[]>()
  private flushScheduled = false

  constructor (
    private readonly link: RedisLink,
    private readonly count: (direction: 'published' | 'received') => void,
    private readonly log: Log
  ) {
    link.commands.defineCommand('sbLiveMembers', { numberOfKeys: 1, lua: LIVE_MEMBERS })
    link.commands.defineCommand('sbPublishToClient', { numberOfKeys: 1, lua: PUBLISH_TO_CLIENT })
    this.commands = link.commands as Redis & Scripts
    this.serverSubscribed = new Promise(resolve => { this.firstSubscribed = resolve })
    link.subscriber.on('message', (channel: string, payload: string) => this.onMessage(channel, payload))
    link.addRestorer({ prepare: () => this.resubscribe(), write: tx => this.rewrite(tx), written: ok => this.rewritten(ok) })
    link.onBeat(() => this.sweepDeadMembers())
    if (link.ready) link.restore().catch(() => {})
  }

  get serverId (): string {
    return this.link.serverId
  }

  /** Channels this instance holds a subscription to. */
  get channels (): string[] {
    return [...this.subscriptions.keys()]
  }

  onRoomFrame (fn: RoomFrameHandler): void {
    this.roomHandlers.push(fn)
  }

  onClientFrame (fn: ClientFrameHandler): void {
    this.clientHandlers.push(fn)
  }

  onMembersGone (fn: MembersGoneHandler): void {
    this.goneHandlers.push(fn)
  }

  /**
   * Sends a room frame to the other instances that have members in the room.
   * The frames a room gets within one event-loop turn leave as one PUBLISH
   * at the end of the turn (setImmediate), in order, and every room's PUBLISH
   * of that turn in one write (ioredis auto-pipelining): under load a
   * cross-instance delivery costs Redis a fraction of a command.
   */
  publishToRoom (room: string, frame: string, exceptConnectionId?: string): void {
    if (!this.link.ready) return
    let parts = this.outbox.get(room)
    if (!parts) this.outbox.set(room, parts = [])
    parts.push(exceptConnectionId ?? '', frame)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(() => this.flushRooms())
    }
  }

  /** One PUBLISH per room for the frames queued this turn: "<origin>\n<except>\n<frame>[\n<except>\n<frame>]…" (a JSON frame has no raw newline). */
  private flushRooms (): void {
    this.flushScheduled = false
    if (this.outbox.size === 0) return
    const batches = [...this.outbox]
    this.outbox.clear()
    if (!this.link.ready) return
    for (const [room, parts] of batches) {
      this.count('published')
      this.commands.publish(roomChannel(room), `${this.serverId}\n${parts.join('\n')}`).catch(err => {
        this.log.warn({ event: 'bus.publish_failed', room, frames: parts.length / 2, reason: (err as Error).message }, 'room frames did not reach the other instances')
      })
    }
  }

  /** Sends a direct-message frame to the client's connections on other instances; returns how many it reached. */
  async publishToClient (clientId: string, frame: string): Promise<number> {
    if (!this.link.ready) throw unavailable(`redis is ${this.link.status}; the message cannot reach other instances nor be queued; retry later`)
    try {
      const reached = await this.commands.sbPublishToClient(connsKey(clientId), this.serverId, INSTANCE_PREFIX, SERVER_PREFIX, `${this.serverId}\n${clientId}\n${frame}`)
      this.count('published')
      return reached
    } catch (err) {
      throw unavailable(`redis did not accept the message: ${(err as Error).message}`)
    }
  }

  /** The room's members on every other live instance (dead instances' members are removed and announced). */
  async members (room: string): Promise<string[]> {
    this.link.requireReady()
    const [live, gone] = await this.commands.sbLiveMembers(membersKey(room), this.serverId, INSTANCE_PREFIX)
    this.announceGone(room, gone, live)
    return live
  }

  memberJoined (room: string, clientId: string): Promise<void> {
    let set = this.localMembers.get(room)
    if (!set) this.localMembers.set(room, set = new Set())
    set.add(clientId)
    return this.writeMember(room, clientId)
  }

  memberLeft (room: string, clientId: string): void {
    const set = this.localMembers.get(room)
    set?.delete(clientId)
    if (set?.size === 0) this.localMembers.delete(room)
    this.writeMember(room, clientId).catch(() => {})
  }

  subscribeRoom (room: string): Promise<void> {
    return this.retain(roomChannel(room))
  }

  unsubscribeRoom (room: string): void {
    this.release(roomChannel(room))
  }

  /**
   * A connection of the client is about to get its welcome: counted here, then
   * written to Redis (and this instance's channel subscribed) before this
   * resolves. While Redis is down it resolves at once: the restore writes it.
   */
  async clientConnected (clientId: string): Promise<void> {
    this.localConnections.set(clientId, (this.localConnections.get(clientId) ?? 0) + 1)
    if (!this.link.ready) {
      this.staleConnections.add(clientId)
      return
    }
    try {
      await this.serverSubscribed
      await this.writeConnections(clientId)
    } catch {
      // marked stale by the write: the restore rewrites it when redis is back
    }
  }

  clientDisconnected (clientId: string): void {
    const count = (this.localConnections.get(clientId) ?? 0) - 1
    if (count > 0) this.localConnections.set(clientId, count)
    else this.localConnections.delete(clientId)
    this.writeConnections(clientId).catch(() => {})
  }

  /** On shutdown: this instance's presence and connection counts leave Redis. */
  async withdraw (): Promise<void> {
    // frames queued this turn still go out before this instance's entries do
    this.flushRooms()
    if (!this.link.ready) return
    const tx = this.commands.multi()
    for (const [room, clients] of this.localMembers) {
      for (const clientId of clients) tx.hdel(membersKey(room), `${this.serverId}|${clientId}`)
    }
    for (const clientId of this.localConnections.keys()) tx.hdel(connsKey(clientId), this.serverId)
    await tx.exec().catch(() => {})
  }

  /** On every heartbeat: rooms with members here drop (and announce) the members of dead instances. */
  private sweepDeadMembers (): void {
    for (const room of this.localMembers.keys()) {
      this.members(room).catch(() => {})
    }
  }

  private announceGone (room: string, gone: string[], live: string[]): void {
    if (gone.length === 0) return
    const still = new Set(live)
    const left = [...new Set(gone)].filter(clientId => !still.has(clientId) && !this.localMembers.get(room)?.has(clientId))
    if (left.length === 0) return
    this.log.info({ event: 'bus.members_gone', room, count: left.length }, 'members of an instance whose heartbeat expired left the room')
    for (const fn of this.goneHandlers) fn(room, left)
  }

  private retain (channel: string): Promise<void> {
    const existing = this.subscriptions.get(channel)
    if (existing) {
      existing.count++
      return existing.subscribed
    }
    const sub: Subscription = { count: 1, subscribed: this.subscribe(channel) }
    this.subscriptions.set(channel, sub)
    // a room join that fails gives its count back (it never calls release)
    sub.subscribed.catch(() => {
      if (this.subscriptions.get(channel) === sub && --sub.count === 0) this.subscriptions.delete(channel)
    })
    return sub.subscribed
  }

  private release (channel: string): void {
    const sub = this.subscriptions.get(channel)
    if (!sub || --sub.count > 0) return
    this.subscriptions.delete(channel)
    if (!this.link.ready) return // nothing to undo: the subscriber restores only what is still counted
    this.link.subscriber.unsubscribe(channel).catch(err => {
      this.log.debug({ event: 'bus.unsubscribe_failed', channel, reason: (err as Error).message }, 'unsubscribe failed')
    })
  }

  private async subscribe (channel: string): Promise<void> {
    if (!this.link.ready) throw unavailable(`redis is ${this.link.status}; retry later`)
    try {
      await this.link.subscriber.subscribe(channel)
    } catch (err) {
      throw unavailable(`redis refused the subscription: ${(err as Error).message}`)
    }
  }

  /** Writes whether the client is a member here as it is now; never rejects (a lost write is marked stale for the restore). */
  private writeMember (room: string, clientId: string): Promise<void> {
    const field = `${this.serverId}|${clientId}`
    const present = this.localMembers.get(room)?.has(clientId) ?? false
    return this.write(
      () => present ? this.commands.hset(membersKey(room), field, 1) : this.commands.hdel(membersKey(room), field),
      () => {
        let set = this.staleMembers.get(room)
        if (!set) this.staleMembers.set(room, set = new Set())
        set.add(clientId)
      }
    ).catch(() => {})
  }

  /** Writes the client's connection count here as it is now (set or removed). */
  private writeConnections (clientId: string): Promise<void> {
    const count = this.localConnections.get(clientId) ?? 0
    return this.write(
      () => count > 0 ? this.commands.hset(connsKey(clientId), this.serverId, count) : this.commands.hdel(connsKey(clientId), this.serverId),
      () => this.staleConnections.add(clientId)
    )
  }

  /** A write whose loss the restore repairs: marked stale when Redis is down or the write failed. */
  private async write (op: () => Promise<unknown>, stale: () => void): Promise<void> {
    if (!this.link.ready) {
      stale()
      throw unavailable(`redis is ${this.link.status}`)
    }
    try {
      await op()
    } catch (err) {
      stale()
      this.log.warn({ event: 'bus.write_failed', reason: (err as Error).message }, 'a cluster bookkeeping write failed; it is redone when redis is back')
      throw err
    }
  }

  private onMessage (channel: string, payload: string): void {
    const first = payload.indexOf('\n')
    const second = payload.indexOf('\n', first + 1)
    if (first < 0 || second < 0) return
    if (payload.slice(0, first) === this.serverId) return
    const middle = payload.slice(first + 1, second)
    this.count('received')
    if (channel.startsWith(ROOM_PREFIX)) {
      this.received.room++
      const room = channel.slice(ROOM_PREFIX.length)
      // one or more "<except>\n<frame>" pairs, in the order they were published
      let except = middle
      let at = second + 1
      for (;;) {
        const end = payload.indexOf('\n', at)
        const frame = end < 0 ? payload.slice(at) : payload.slice(at, end)
        for (const fn of this.roomHandlers) fn(room, frame, except || undefined)
        if (end < 0) break
        const next = payload.indexOf('\n', end + 1)
        if (next < 0) break
        except = payload.slice(end + 1, next)
        at = next + 1
      }
    } else if (channel.startsWith(SERVER_PREFIX)) {
      const frame = payload.slice(second + 1)
      this.received.client++
      for (const fn of this.clientHandlers) fn(middle, frame)
    }
  }

  /** Redis is (back) up: this instance's channel and every room subscription still counted are made again. */
  private async resubscribe (): Promise<void> {
    const channels = [serverChannel(this.serverId), ...this.subscriptions.keys()]
    const subscribed = this.link.subscriber.subscribe(...channels).then(() => undefined)
    this.serverSubscribed = subscribed.catch(() => {})
    this.serverSubscribed.then(this.firstSubscribed)
    for (const channel of this.subscriptions.keys()) {
      const sub = this.subscriptions.get(channel) as Subscription
      sub.subscribed = subscribed.catch(err => { throw unavailable(`redis refused the subscription: ${(err as Error).message}`) })
      sub.subscribed.catch(() => {})
    }
    await subscribed
    if (channels.length > 1) this.log.info({ event: 'bus.restored', channels: channels.length }, 'subscriptions restored')
  }

  /** This instance's entries as they are now, and the removal of those that went while Redis could not be told. */
  private rewrite (tx: ChainableCommander): void {
    for (const [room, clients] of this.localMembers) {
      for (const clientId of clients) tx.hset(membersKey(room), `${this.serverId}|${clientId}`, 1)
    }
    for (const [room, clients] of this.staleMembers) {
      for (const clientId of clients) {
        if (!this.localMembers.get(room)?.has(clientId)) tx.hdel(membersKey(room), `${this.serverId}|${clientId}`)
      }
    }
    for (const [clientId, count] of this.localConnections) tx.hset(connsKey(clientId), this.serverId, count)
    for (const clientId of this.staleConnections) {
      if (!this.localConnections.has(clientId)) tx.hdel(connsKey(clientId), this.serverId)
    }
    this.restoring = { members: new Map(this.staleMembers), connections: new Set(this.staleConnections) }
    this.staleMembers.clear()
    this.staleConnections.clear()
  }

  private rewritten (ok: boolean): void {
    const taken = this.restoring
    this.restoring = null
    if (ok || !taken) return
    for (const [room, clients] of taken.members) {
      let set = this.staleMembers.get(room)
      if (!set) this.staleMembers.set(room, set = new Set())
      for (const clientId of clients) set.add(clientId)
    }
    for (const clientId of taken.connections) this.staleConnections.add(clientId)
  }
}
