import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import { WsError } from './dispatcher.js'
import { KEY_PREFIX, instanceKey, type RedisLink } from './redis.js'
import type { RoomCluster } from './room-registry.js'

/*
 * Channels (one plain SUBSCRIBE each, held only while this instance needs it):
 *   sb:ch:room:<room>       while a local connection is in the room
 *   sb:ch:client:<clientId> while the client has a local connection
 * A payload is "<origin serverId>\n<connection id to skip or empty>\n<frame>":
 * the frame is the already-serialized JSON every member receives, so nobody
 * re-serializes it, and the origin skips its own copy (it delivered locally).
 *
 * Keys:
 *   sb:members:<room>   hash "<serverId>|<clientId>" → 1: presence across instances
 *   sb:conns:<clientId> hash serverId → open connections there: `delivered` across instances
 * Entries of an instance whose heartbeat key expired are ignored and removed
 * by the scripts that read them, so a crashed instance leaves nothing behind.
 */

const roomChannel = (room: string) => `${KEY_PREFIX}ch:room:${room}`
const clientChannel = (clientId: string) => `${KEY_PREFIX}ch:client:${clientId}`
const membersKey = (room: string) => `${KEY_PREFIX}members:${room}`
const connsKey = (clientId: string) => `${KEY_PREFIX}conns:${clientId}`
const ROOM_PREFIX = roomChannel('')
const CLIENT_PREFIX = clientChannel('')
const INSTANCE_PREFIX = instanceKey('')

/** The room's members on live instances; removes those of dead ones. */
const LIVE_MEMBERS = `
local out = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local sep = string.find(field, '|', 1, true)
  local server = string.sub(field, 1, sep - 1)
  if server == ARGV[1] or redis.call('EXISTS', ARGV[2] .. server) == 1 then
    table.insert(out, string.sub(field, sep + 1))
  else
    redis.call('HDEL', KEYS[1], field)
  end
end
return out`

/** Counts the client's connections on other live instances and, when there are any, publishes to them. */
const PUBLISH_TO_CLIENT = `
local fields = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #fields, 2 do
  local server = fields[i]
  if server ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[2] .. server) == 1 then
      others = others + tonumber(fields[i + 1])
    else
      redis.call('HDEL', KEYS[1], server)
    end
  end
end
if others > 0 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return others`

interface Scripts {
  sbLiveMembers (key: string, me: string, prefix: string): Promise<string[]>
  sbPublishToClient (key: string, me: string, prefix: string, channel: string, payload: string): Promise<number>
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
 * Reference-counted subscriptions, and the publishing side of room and
 * direct-message delivery. Plain class: the plugin below wires it to the app.
 */
export class Bus {
  /** Frames received from other instances, for status and tests. */
  readonly received = { room: 0, client: 0 }
  private readonly subscriptions = new Map<string, Subscription>()
  /** room → client ids with a connection here in the room (what sb:members holds for this instance). */
  private readonly localMembers = new Map<string, Set<string>>()
  private readonly commands: Redis & Scripts

  constructor (
    private readonly link: RedisLink,
    private readonly handlers: { room: (room: string, frame: string, except?: string) => void, client: (clientId: string, frame: string) => void, localConnections: (clientId: string) => number },
    private readonly log: Log
  ) {
    link.commands.defineCommand('sbLiveMembers', { numberOfKeys: 1, lua: LIVE_MEMBERS })
    link.commands.defineCommand('sbPublishToClient', { numberOfKeys: 1, lua: PUBLISH_TO_CLIENT })
    this.commands = link.commands as Redis & Scripts
    link.subscriber.on('message', (channel: string, payload: string) => this.onMessage(channel, payload))
    link.onReady(() => this.restore())
  }

  get serverId (): string {
    return this.link.serverId
  }

  /** Channels this instance holds a subscription to. */
  get channels (): string[] {
    return [...this.subscriptions.keys()]
  }

  /** Sends a room frame to the other instances that have members in the room. */
  publishToRoom (room: string, frame: string, exceptConnectionId?: string): void {
    if (!this.link.ready) return
    this.commands.publish(roomChannel(room), `${this.serverId}\n${exceptConnectionId ?? ''}\n${frame}`).catch(err => {
      this.log.warn({ event: 'bus.publish_failed', room, reason: (err as Error).message }, 'a room frame did not reach the other instances')
    })
  }

  /** Sends a direct-message frame to the client's connections on other instances; returns how many there are. */
  async publishToClient (clientId: string, frame: string): Promise<number> {
    if (!this.link.ready) throw unavailable(`redis is ${this.link.status}; the message cannot reach other instances nor be queued; retry later`)
    try {
      return await this.commands.sbPublishToClient(connsKey(clientId), this.serverId, INSTANCE_PREFIX, clientChannel(clientId), `${this.serverId}\n\n${frame}`)
    } catch (err) {
      throw unavailable(`redis did not accept the message: ${(err as Error).message}`)
    }
  }

  /** The room's members on every live instance. */
  async members (room: string): Promise<string[]> {
    this.link.requireReady()
    return this.commands.sbLiveMembers(membersKey(room), this.serverId, INSTANCE_PREFIX)
  }

  memberJoined (room: string, clientId: string): void {
    let set = this.localMembers.get(room)
    if (!set) this.localMembers.set(room, set = new Set())
    set.add(clientId)
    this.write(() => this.commands.hset(membersKey(room), `${this.serverId}|${clientId}`, 1))
  }

  memberLeft (room: string, clientId: string): void {
    const set = this.localMembers.get(room)
    set?.delete(clientId)
    if (set?.size === 0) this.localMembers.delete(room)
    this.write(() => this.commands.hdel(membersKey(room), `${this.serverId}|${clientId}`))
  }

  retainRoom (room: string): Promise<void> {
    return this.retain(roomChannel(room))
  }

  releaseRoom (room: string): void {
    this.release(roomChannel(room))
  }

  /** A connection of the client opened here: subscribe (first one), then say how many there are. */
  clientConnected (clientId: string): void {
    this.retain(clientChannel(clientId)).then(() => this.writeConnectionCount(clientId), () => {
      // restored with the other subscriptions when redis is back
    })
  }

  clientDisconnected (clientId: string): void {
    this.release(clientChannel(clientId))
    this.writeConnectionCount(clientId)
  }

  /** On shutdown: this instance's presence and connection counts leave Redis. */
  async withdraw (): Promise<void> {
    if (!this.link.ready) return
    const ops: Array<Promise<unknown>> = []
    for (const [room, clients] of this.localMembers) {
      for (const clientId of clients) ops.push(this.commands.hdel(membersKey(room), `${this.serverId}|${clientId}`))
    }
    for (const channel of this.subscriptions.keys()) {
      if (channel.startsWith(CLIENT_PREFIX)) ops.push(this.commands.hdel(connsKey(channel.slice(CLIENT_PREFIX.length)), this.serverId))
    }
    await Promise.allSettled(ops)
  }

  private retain (channel: string): Promise<void> {
    const existing = this.subscriptions.get(channel)
    if (existing) {
      existing.count++
      return existing.subscribed
    }
    const sub: Subscription = { count: 1, subscribed: this.subscribe(channel) }
    this.subscriptions.set(channel, sub)
    // a room join that fails gives its count back (it never calls release); a client keeps its count for the restore
    if (channel.startsWith(ROOM_PREFIX)) {
      sub.subscribed.catch(() => {
        if (this.subscriptions.get(channel) === sub && --sub.count === 0) this.subscriptions.delete(channel)
      })
    }
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

  private writeConnectionCount (clientId: string): void {
    const count = this.handlers.localConnections(clientId)
    this.write(() => count > 0
      ? this.commands.hset(connsKey(clientId), this.serverId, count)
      : this.commands.hdel(connsKey(clientId), this.serverId))
  }

  /** A write whose loss the restore repairs: logged, never thrown. */
  private write (op: () => Promise<unknown>): void {
    if (!this.link.ready) return
    op().catch(err => this.log.warn({ event: 'bus.write_failed', reason: (err as Error).message }, 'a cluster bookkeeping write failed; it is redone when redis is back'))
  }

  private onMessage (channel: string, payload: string): void {
    const first = payload.indexOf('\n')
    const second = payload.indexOf('\n', first + 1)
    if (first < 0 || second < 0) return
    if (payload.slice(0, first) === this.serverId) return
    const except = payload.slice(first + 1, second) || undefined
    const frame = payload.slice(second + 1)
    if (channel.startsWith(ROOM_PREFIX)) {
      this.received.room++
      this.handlers.room(channel.slice(ROOM_PREFIX.length), frame, except)
    } else if (channel.startsWith(CLIENT_PREFIX)) {
      this.received.client++
      this.handlers.client(channel.slice(CLIENT_PREFIX.length), frame)
    }
  }

  /** Redis is (back) up: every subscription still counted is made again, and this instance's entries rewritten. */
  private restore (): void {
    const channels = [...this.subscriptions.keys()]
    for (const channel of channels) {
      const sub = this.subscriptions.get(channel) as Subscription
      sub.subscribed = this.subscribe(channel)
      sub.subscribed.catch(err => this.log.warn({ event: 'bus.resubscribe_failed', channel, reason: (err as Error).message }, 'resubscribe failed'))
    }
    for (const [room, clients] of this.localMembers) {
      for (const clientId of clients) this.write(() => this.commands.hset(membersKey(room), `${this.serverId}|${clientId}`, 1))
    }
    for (const channel of channels) {
      if (channel.startsWith(CLIENT_PREFIX)) this.writeConnectionCount(channel.slice(CLIENT_PREFIX.length))
    }
    if (channels.length > 0) this.log.info({ event: 'bus.restored', channels: channels.length }, 'subscriptions restored')
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Cross-instance delivery; null when REDIS_URL is unset. */
    bus: Bus | null
  }
}

/**
 * Makes rooms and direct messages cluster-wide by replacing their delivery
 * hooks: a frame goes to local connections as before and, through Redis, to
 * the instances whose connections need it, and to no other.
 */
export default fp(async function bus (app) {
  const link = app.redisLink
  if (!link) {
    app.decorate('bus', null)
    return
  }
  const pubsub = app.metrics.pubsubMessages
  const deliverToRoomHere = app.rooms.deliver
  const deliverToClientHere = app.directMessages.deliver
  const bus = new Bus(link, {
    room: (room, frame, except) => {
      pubsub.inc({ direction: 'received' })
      deliverToRoomHere(room, frame, except)
    },
    client: (clientId, frame) => {
      pubsub.inc({ direction: 'received' })
      deliverToClientHere(clientId, frame).catch(() => {})
    },
    localConnections: clientId => app.connections.ofClient(clientId)?.size ?? 0
  }, app.log)
  app.decorate('bus', bus)

  app.rooms.deliver = (room, frame, except) => {
    bus.publishToRoom(room, frame, except)
    pubsub.inc({ direction: 'published' })
    return deliverToRoomHere(room, frame, except)
  }
  const cluster: RoomCluster = {
    retain: room => bus.retainRoom(room),
    release: room => bus.releaseRoom(room),
    memberJoined: (room, clientId) => bus.memberJoined(room, clientId),
    memberLeft: (room, clientId) => bus.memberLeft(room, clientId),
    members: room => bus.members(room)
  }
  app.rooms.cluster = cluster

  app.directMessages.deliver = async (clientId, frame) => {
    const here = await deliverToClientHere(clientId, frame)
    // a client connected here still gets the message while redis is down
    if (here > 0 && !link.ready) return here
    const elsewhere = await bus.publishToClient(clientId, frame)
    pubsub.inc({ direction: 'published' })
    return here + elsewhere
  }

  app.connections.onOpen(conn => bus.clientConnected(conn.clientId))
  app.connections.onClose(conn => bus.clientDisconnected(conn.clientId))

  app.statusReport.section('bus', () => ({ subscriptions: bus.channels.length, received: bus.received }))

  app.addHook('onClose', async () => {
    await bus.withdraw()
  })
}, { name: 'bus', fastify: '5.x', dependencies: ['redis', 'rooms', 'direct-messages', 'connections', 'status', 'metrics'] })
