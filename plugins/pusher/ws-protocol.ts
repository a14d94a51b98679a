import { randomInt } from 'node:crypto'
import type { WebSocket } from 'ws'
import type { FastifyBaseLogger } from 'fastify'
import type { PusherApp } from './apps.js'
import { ChannelRegistry, isCache, isEncrypted, isPresence, isPrivate, USER_CHANNEL_PREFIX, type Member, type Subscriber } from './channels/registry.js'
import { channelAuthString, userAuthString, verifyAuth } from './signatures.js'
import { jsonDepth, tooDeepField, type Session, type JoinOutcome } from './deps.js'

/** A presence channel's member as every instance sees it: user_id as given (a number stays a number) and user_info. */
export interface PresenceMember { userId: string | number, info: unknown }

/** Channel names: Pusher's character set (their length is the app's maxChannelNameLength). */
export const CHANNEL_NAME = /^[-a-zA-Z0-9_=@,.;]+$/
export const SOCKET_ID = /^\d+\.\d+$/
/** Longest presence user_id (and signed-in user id) a connection may carry. */
export const MAX_USER_ID_LENGTH = 128
/** The longest event name any frame may carry, whatever an app's maxEventNameLength. */
const MAX_FRAME_EVENT_LENGTH = 200

/** Close codes of protocol 7 used here (pusher-js: 4000-4099 never reconnect, 4100-4199 back off, 4200-4299 reconnect at once). */
export const CLOSE = {
  unknownApp: 4001,
  /** The app is disabled (`enabled: false`): pusher-js does not reconnect. */
  appDisabled: 4003,
  overQuota: 4004,
  invalidVersion: 4006,
  unsupportedProtocol: 4007,
  noProtocol: 4008,
  unauthorized: 4009,
  /** Over capacity: pusher-js reconnects after a back-off (a client that floods or does not read its frames). */
  overCapacity: 4100,
  reconnect: 4200,
  pongNotReceived: 4201
} as const

/**
 * `pusher:error` codes that do not close (Pusher's 4300 family, "other errors",
 * and 4009 for what the connection is not allowed to do): pusher-js hands them
 * to the app's error handler.
 */
export const ERROR = {
  /** A frame that is not JSON, too deep, or has a field over its limit. */
  invalid: 4300,
  /** Over the message rate (WS_MESSAGES_PER_SECOND) or the app's client-event rate. */
  rateLimited: 4301,
  /** Something this connection may not do (a client event on a channel it is not in, or not allowed there). */
  forbidden: 4009,
  /** The other instances cannot be reached (Redis is down): what was sent reached this instance only. */
  unavailable: 4302
} as const

/** What every Pusher socket of an app shares. */
export interface AppContext {
  app: PusherApp
  registry: ChannelRegistry
  log: FastifyBaseLogger
  /** Seconds of silence before the server pings (and the value pusher-js is told). */
  activityTimeoutS: number
  /** How long a ping may go unanswered before the socket is closed with 4201. */
  pongTimeoutMs: number
  /** A webhook event, for the app's webhooks (a no-op without). */
  webhook (event: Record<string, unknown>): void
  /** Counted per frame in and out (metrics); a broadcast counts its recipients once. */
  count (direction: 'in' | 'out', kind: string, n?: number): void
  /** A presence channel's members on the other instances. */
  members (channel: string): Promise<Map<string, PresenceMember>>
  /** A cache channel's last event, triggered on any instance. */
  cached (channel: string): Promise<{ event: string, data: string } | undefined>
  /** Settles once the channel's frames from other instances reach this one (before subscription_succeeded). */
  reachable (channel: string): Promise<void>
  /** Settles once events sent to the user on other instances reach this one (before signin_success). */
  userReachable (userId: string): Promise<void>
  /** Sends a channel frame to the other instances' subscribers; rejects (503) when it cannot reach them. */
  publish (channel: string, payload: string, exceptSocketId?: string): Promise<void>
  /** A user's first socket here joins a presence channel: added (first anywhere), present, or full (the member cap, cluster-wide). */
  admitMember (channel: string, key: string, member: PresenceMember): Promise<JoinOutcome>
  /** A user's last socket here left a presence channel. */
  memberLeft (channel: string, key: string, member: Member): void
  /** A user who was on no instance joined the presence channel with socket `socketId` (it is not told of itself). */
  memberAdded (channel: string, key: string, member: PresenceMember, socketId: string): void
  /** A frame to the channel's subscribers here (but `exceptSocketId`) and on every other instance. */
  announce (channel: string, payload: string, exceptSocketId?: string): void
  /** JSON_MAX_DEPTH: the deepest a frame's fields (and a presence member's info) may nest. */
  maxDepth: number
  /** WS_MESSAGES_PER_SECOND, for the message of a refusal over it. */
  messagesPerSecond: number
  /** A client event, to the native room bridged to the channel (a no-op when there is none). */
  bridge (channel: string, event: string, data: string, userId?: string | number): void
}

let counter = 0
/** `<digits>.<digits>`, unique in this process and random across instances. */
export function newSocketId (): string {
  counter = (counter + 1) % 1e9
  return `${randomInt(1, 2 ** 47)}.${counter}`
}

/** Every server → client frame: `data` is a JSON string except in `pusher:error`. */
export function frame (event: string, data?: unknown, channel?: string, extra?: Record<string, unknown>): string {
  return JSON.stringify({
    event,
    ...(channel === undefined ? {} : { channel }),
    ...extra,
    ...(data === undefined ? {} : { data: typeof data === 'string' ? data : JSON.stringify(data) })
  })
}

/** `pusher:error` with its numeric code; `channel` names the channel a refused client event was for. */
export function errorFrame (code: number, message: string, channel?: string): string {
  return JSON.stringify({ event: 'pusher:error', ...(channel === undefined ? {} : { channel }), data: { code, message } })
}

/** How long a closed peer gets to answer the close frame before it is terminated (ws would wait 30 s). */
export const CLOSE_HANDSHAKE_MS = 2000

/** Closes with the code and reason, and terminates the socket if the peer does not complete the close handshake in time. */
export function closeWithin (ws: WebSocket, code: number, reason: string): void {
  ws.close(code, reason.slice(0, 120))
  setTimeout(() => { if (ws.readyState !== 3) ws.terminate() }, CLOSE_HANDSHAKE_MS).unref()
}

interface Subscription {
  /** Presence channels: the member key (String(user_id)) and user_id as given. */
  userKey?: string
  userId?: string | number
}

/**
 * One protocol-7 connection: its frames in, its subscriptions, its activity
 * timer, its sign-in. It speaks through an engine session, which owns the
 * message rate, the send-buffer cap, dead peers, shutdown and the admin
 * listing; this class holds only what Pusher means by each frame.
 */
export class PusherSocket implements Subscriber {
  readonly openedAt = Date.now()
  readonly subscriptions = new Map<string, Subscription>()
  /** The id a `pusher:signin` proved, if any. */
  user: string | undefined
  private pingTimer: NodeJS.Timeout | undefined
  private pongTimer: NodeJS.Timeout | undefined
  /** enableUserAuthentication: closes the connection with 4009 unless it signs in (or is authorized on a channel) in time. */
  private signinTimer: NodeJS.Timeout | undefined
  private windowStart = 0
  private windowCount = 0
  private closed = false

  constructor (readonly session: Session, readonly ctx: AppContext, readonly socketId: string) {}

  get clientKey (): string {
    return this.session.clientKey
  }

  send (payload: string): void {
    if (!this.session.sendRaw(payload)) return
    this.ctx.count('out', 'event')
  }

  /** Writes a text frame built once for every subscriber (textFrame). */
  sendFrame (frame: Buffer): void {
    this.session.sendFrame(frame)
  }

  /** Sends `pusher:error` then closes with the same code and its message as reason. */
  refuse (code: number, message: string): void {
    this.send(errorFrame(code, message))
    this.session.closeWith(code, message)
  }

  /** A frame over WS_MESSAGES_PER_SECOND was dropped by the engine: told with 4301 (sustained flooding closes with 4100). */
  rateLimited (): void {
    this.send(errorFrame(ERROR.rateLimited, `Rate limit exceeded: at most ${this.ctx.messagesPerSecond} messages per second per connection; this one was dropped`))
  }

  start (): void {
    this.send(frame('pusher:connection_established', { socket_id: this.socketId, activity_timeout: this.ctx.activityTimeoutS }))
    this.armActivity()
    const { app } = this.ctx
    if (app.enableUserAuthentication) {
      this.signinTimer = setTimeout(() => {
        this.signinTimer = undefined
        this.refuse(CLOSE.unauthorized, `Connection not authorized: sign in (pusher:signin) or subscribe to a private- or presence- channel within ${app.userAuthenticationTimeout} ms (userAuthenticationTimeout)`)
      }, app.userAuthenticationTimeout)
    }
  }

  /** Signed in or authorized on a private or presence channel: the sign-in deadline is met. */
  private authorized (): void {
    clearTimeout(this.signinTimer)
    this.signinTimer = undefined
  }

  /** Any frame from the client is activity: the ping waits another activity timeout. */
  private armActivity (): void {
    clearTimeout(this.pongTimer)
    this.pongTimer = undefined
    clearTimeout(this.pingTimer)
    this.pingTimer = setTimeout(() => {
      this.send(frame('pusher:ping', {}))
      this.pongTimer = setTimeout(() => this.refuse(CLOSE.pongNotReceived, 'Pong reply not received'), this.ctx.pongTimeoutMs)
    }, this.ctx.activityTimeoutS * 1000)
  }

  /**
   * One frame from the client (null: a binary frame, which the protocol has
   * none of), within the message rate. Bounded before anything reads it: every
   * field nests at most JSON_MAX_DEPTH deep, the event name at most 200 characters.
   */
  handle (raw: string | null): void {
    this.armActivity()
    if (raw === null) {
      this.send(errorFrame(ERROR.invalid, 'message: must be a text frame of JSON'))
      return
    }
    let msg: { event?: unknown, data?: unknown, channel?: unknown }
    try {
      msg = JSON.parse(raw)
    } catch {
      this.send(errorFrame(ERROR.invalid, 'message: must be JSON of the form {"event","data","channel"}'))
      return
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      this.send(errorFrame(ERROR.invalid, 'message: must be a JSON object with a string "event"'))
      return
    }
    // named down to the field of `data` that is too deep (data.channel, data.auth, ...)
    const tooDeep = tooDeepField(msg as Record<string, unknown>, this.ctx.maxDepth, 2)
    if (tooDeep !== null) {
      this.send(errorFrame(ERROR.invalid, tooDeep))
      return
    }
    const maxEvent = Math.max(this.ctx.app.maxEventNameLength, MAX_FRAME_EVENT_LENGTH)
    if (typeof msg.event !== 'string' || msg.event === '' || msg.event.length > maxEvent) {
      this.send(errorFrame(ERROR.invalid, `event: must be a string of 1 to ${maxEvent} characters`))
      return
    }
    this.ctx.count('in', msg.event.startsWith('client-') ? 'client_event' : msg.event)
    const data = (msg.data !== null && typeof msg.data === 'object' ? msg.data : {}) as Record<string, unknown>
    switch (msg.event) {
      case 'pusher:ping':
        this.send(frame('pusher:pong', {}))
        return
      case 'pusher:pong':
        return
      case 'pusher:subscribe':
        this.subscribe(data)
        return
      case 'pusher:unsubscribe':
        if (typeof data.channel === 'string') this.unsubscribe(data.channel)
        return
      case 'pusher:signin':
        this.signin(data)
        return
    }
    if (msg.event.startsWith('client-')) {
      this.clientEvent(msg.event, msg.channel, msg.data)
      return
    }
    this.send(errorFrame(ERROR.invalid, `event: ${msg.event.slice(0, 64)} is not an event a client may send (pusher:subscribe, pusher:unsubscribe, pusher:ping, pusher:signin, client-*)`))
  }

  private subscriptionError (channel: string, status: number, error: string, type = 'AuthError'): void {
    this.send(frame('pusher:subscription_error', undefined, channel, { data: { type, error, status } }))
  }

  private subscribe (data: Record<string, unknown>): void {
    const { app } = this.ctx
    const channel = data.channel
    if (typeof channel !== 'string' || channel === '') {
      this.send(errorFrame(ERROR.invalid, 'data.channel: must be a channel name'))
      return
    }
    if (this.subscriptions.has(channel)) {
      this.send(frame('pusher_internal:subscription_succeeded', this.presenceData(channel) ?? {}, channel))
      return
    }
    if (channel.startsWith(USER_CHANNEL_PREFIX)) {
      if (this.user === undefined || channel !== USER_CHANNEL_PREFIX + this.user) {
        this.subscriptionError(channel, 403, 'Only the user signed in on this connection may subscribe to its #server-to-user- channel')
        return
      }
      this.join(channel, {})
      return
    }
    if (channel.length > app.maxChannelNameLength) {
      this.subscriptionError(channel, 4009, `The channel name is longer than the allowed ${app.maxChannelNameLength} characters (maxChannelNameLength; got ${channel.length})`, 'LimitReached')
      return
    }
    if (!CHANNEL_NAME.test(channel)) {
      this.subscriptionError(channel, 400, `channel: must be 1 to ${app.maxChannelNameLength} characters of A-Z a-z 0-9 _ - = @ , . ;`, 'InvalidChannelName')
      return
    }
    if (isPresence(channel)) {
      const channelData = data.channel_data
      if (typeof channelData !== 'string') {
        this.subscriptionError(channel, 400, 'channel_data: a presence subscription needs channel_data (a JSON string with user_id)')
        return
      }
      if (!verifyAuth(app.key, app.secret, data.auth, channelAuthString(this.socketId, channel, channelData))) {
        this.subscriptionError(channel, 401, `Invalid signature: expected HMAC SHA256 hex digest of ${this.socketId}:${channel}:<channel_data> with the app secret, as "<key>:<signature>"`)
        return
      }
      this.authorized()
      let member: { user_id?: unknown, user_info?: unknown }
      try {
        member = JSON.parse(channelData)
      } catch {
        this.subscriptionError(channel, 400, 'channel_data: must be JSON with user_id')
        return
      }
      const userId = member?.user_id
      if (!((typeof userId === 'string' && userId !== '') || typeof userId === 'number') || String(userId).length > MAX_USER_ID_LENGTH) {
        this.subscriptionError(channel, 400, `channel_data.user_id: must be a non-empty string or a number, at most ${MAX_USER_ID_LENGTH} characters`)
        return
      }
      const info = member.user_info ?? {}
      if (jsonDepth(info, this.ctx.maxDepth) < 0 || Buffer.byteLength(JSON.stringify(info)) > app.maxPresenceMemberBytes) {
        this.subscriptionError(channel, 400, `channel_data.user_info: at most ${app.maxPresenceMemberBytes} bytes of JSON (maxPresenceMemberBytes)`)
        return
      }
      const key = String(userId)
      this.joinPresence(channel, key, { userId, info })
      return
    }
    if (isPrivate(channel)) {
      if (!verifyAuth(app.key, app.secret, data.auth, channelAuthString(this.socketId, channel))) {
        this.subscriptionError(channel, 401, `Invalid signature: expected HMAC SHA256 hex digest of ${this.socketId}:${channel} with the app secret, as "<key>:<signature>"`)
        return
      }
      this.authorized()
    }
    this.join(channel, {})
  }

  /** The member cap is checked here (this instance's members) and by presence (every instance's), before the socket subscribes. */
  private joinPresence (channel: string, key: string, member: PresenceMember): void {
    const { app, registry } = this.ctx
    const full = () => this.subscriptionError(channel, 4100, `presence channel ${channel} already has its maximum of ${app.maxPresenceMembers} members`, 'LimitReached')
    if (registry.hasMember(channel, key)) {
      this.join(channel, { userKey: key, userId: member.userId }, member.info)
      return
    }
    if (registry.memberCount(channel) >= app.maxPresenceMembers) return full()
    // reserved while presence answers, so a second subscribe of the same channel waits for this one
    const pending: Subscription = { userKey: key, userId: member.userId }
    this.subscriptions.set(channel, pending)
    this.ctx.admitMember(channel, key, member).then(outcome => {
      if (this.subscriptions.get(channel) !== pending) {
        // unsubscribed or closed meanwhile: give the membership back
        if (!registry.hasMember(channel, key)) this.ctx.memberLeft(channel, key, { ...member, sockets: 0 })
        return
      }
      if (outcome === 'full') {
        this.subscriptions.delete(channel)
        return full()
      }
      this.subscriptions.delete(channel)
      this.join(channel, pending, member.info)
      if (outcome === 'added') this.ctx.memberAdded(channel, key, member, this.socketId)
    }, err => {
      if (this.subscriptions.get(channel) === pending) this.subscriptions.delete(channel)
      this.ctx.log.warn({ event: 'pusher.cluster_failed', appId: this.ctx.app.id, channel, step: 'member_added', reason: (err as Error).message }, 'a presence member could not be counted across instances')
      this.subscriptionError(channel, 503, 'The presence channel\'s members cannot be counted across instances right now; retry', 'ServiceUnavailable')
    })
  }

  private presenceData (channel: string, remote: Map<string, PresenceMember> | null = null): { presence: { ids: Array<string | number>, hash: Record<string, unknown>, count: number } } | undefined {
    const ch = this.ctx.registry.get(channel)
    if (!ch || !isPresence(channel)) return undefined
    const all = new Map<string, PresenceMember>(remote ?? [])
    for (const [key, m] of ch.members) all.set(key, m)
    const ids: Array<string | number> = []
    const hash: Record<string, unknown> = {}
    for (const [key, m] of all) {
      ids.push(m.userId)
      hash[key] = m.info
    }
    return { presence: { ids, hash, count: ids.length } }
  }

  private join (channel: string, sub: Subscription, info?: unknown): void {
    const { registry } = this.ctx
    this.subscriptions.set(channel, sub)
    // member_added goes to the others through the registry's events (once, cluster-wide)
    registry.subscribe(this, channel, sub.userKey === undefined ? undefined : { userId: sub.userId!, info })
    // succeeded once an event triggered on any instance reaches this socket, with the members of every instance
    Promise.all([
      this.ctx.reachable(channel),
      sub.userKey === undefined ? null : this.ctx.members(channel),
      isCache(channel) ? this.ctx.cached(channel) : undefined
    ]).then(([, remote, last]) => {
      if (this.subscriptions.get(channel) === sub) this.subscribed(channel, remote, last)
    }, err => {
      this.ctx.log.warn({ event: 'pusher.cluster_failed', appId: this.ctx.app.id, channel, reason: (err as Error).message }, 'the members or the cached event of other instances could not be read')
      if (this.subscriptions.get(channel) === sub) this.subscribed(channel, null, undefined)
    })
  }

  private subscribed (channel: string, remote: Map<string, PresenceMember> | null, last: { event: string, data: string } | undefined): void {
    this.send(frame('pusher_internal:subscription_succeeded', this.presenceData(channel, remote) ?? {}, channel))
    if (isCache(channel)) {
      if (last) {
        this.send(frame(last.event, last.data, channel))
      } else {
        this.send(JSON.stringify({ event: 'pusher:cache_miss', channel }))
        this.ctx.webhook({ name: 'cache_miss', channel })
      }
    }
  }

  unsubscribe (channel: string): void {
    const sub = this.subscriptions.get(channel)
    if (!sub) return
    this.subscriptions.delete(channel)
    // the user's last socket here: member_removed when it is on no instance any more (decided once, cluster-wide),
    // asked before the channel's last subscriber here is, so member_removed comes before channel_vacated
    const member = sub.userKey === undefined ? undefined : this.ctx.registry.get(channel)?.members.get(sub.userKey)
    if (member !== undefined && member.sockets === 1 && this.ctx.registry.get(channel)?.subscribers.has(this) === true) this.ctx.memberLeft(channel, sub.userKey as string, member)
    this.ctx.registry.unsubscribe(this, channel, sub.userKey)
  }

  private signin (data: Record<string, unknown>): void {
    const { app, registry } = this.ctx
    const userData = data.user_data
    let id: unknown
    if (typeof userData === 'string' && verifyAuth(app.key, app.secret, data.auth, userAuthString(this.socketId, userData))) {
      try {
        id = (JSON.parse(userData) as { id?: unknown })?.id
      } catch {}
    }
    // a number is an id too (Laravel and others sign {"id":1}): the user is String(id), as in #server-to-user-<id>
    if (typeof id === 'number' && Number.isFinite(id)) id = String(id)
    if (typeof id !== 'string' || id === '' || id.length > MAX_USER_ID_LENGTH) {
      this.refuse(CLOSE.unauthorized, `Invalid signin: user_data must be signed JSON with an id (a non-empty string or a number, at most ${MAX_USER_ID_LENGTH} characters)`)
      return
    }
    this.authorized()
    if (this.user !== undefined) registry.signedOut(this.user, this)
    this.user = id
    registry.signedIn(id, this)
    // signin_success once an event sent to the user on any instance reaches this socket
    const user = id
    this.ctx.userReachable(id).then(() => {
      if (this.user === user && !this.closed) this.send(frame('pusher:signin_success', { user_data: userData }))
    }, () => {})
  }

  private clientEvent (event: string, channel: unknown, data: unknown): void {
    const { app, registry } = this.ctx
    if (typeof channel !== 'string' || !this.subscriptions.has(channel)) {
      const named = typeof channel === 'string' ? `channel ${channel.slice(0, 200)}` : 'the channel named (channel: must be a string)'
      this.send(errorFrame(ERROR.forbidden, `Client event rejected: ${event.slice(0, 64)}: the connection is not subscribed to ${named}`, typeof channel === 'string' && channel.length <= 200 ? channel : undefined))
      return
    }
    if (!app.enableClientMessages) {
      this.send(errorFrame(ERROR.forbidden, 'Client event rejected: client events are not enabled for this app', channel))
      return
    }
    if (isEncrypted(channel) || !(isPrivate(channel) || isPresence(channel))) {
      this.send(errorFrame(ERROR.forbidden, `Client event rejected: client events are only allowed on private- and presence- channels, not on ${isEncrypted(channel) ? 'private-encrypted-' : 'public'} channels`, channel))
      return
    }
    const now = Date.now()
    if (now - this.windowStart >= 1000) {
      this.windowStart = now
      this.windowCount = 0
    }
    if (++this.windowCount > app.maxClientEventsPerSecond) {
      this.send(errorFrame(ERROR.rateLimited, `Client event rejected: at most ${app.maxClientEventsPerSecond} client events per second per connection`, channel))
      return
    }
    if (event.length > app.maxEventNameLength) {
      this.send(errorFrame(ERROR.invalid, `Client event rejected: event: the name is longer than the allowed ${app.maxEventNameLength} characters (maxEventNameLength)`, channel))
      return
    }
    const payload = typeof data === 'string' ? data : JSON.stringify(data ?? {})
    if (Buffer.byteLength(payload) > app.maxEventPayloadBytes) {
      this.send(errorFrame(ERROR.invalid, `Client event rejected: data: at most ${app.maxEventPayloadBytes} bytes (maxEventPayloadBytes)`, channel))
      return
    }
    const sub = this.subscriptions.get(channel)!
    const userId = sub.userId
    const relayed = frame(event, payload, channel, userId === undefined ? undefined : { user_id: userId })
    this.ctx.count('out', 'client_event', registry.broadcast(channel, relayed, this.socketId))
    this.ctx.publish(channel, relayed, this.socketId).catch(() => {
      this.send(errorFrame(ERROR.unavailable, `Client event ${event.slice(0, 64)} reached this instance's subscribers only: the other instances cannot be reached right now`, channel))
    })
    this.ctx.bridge(channel, event, payload, userId)
    this.ctx.webhook({ name: 'client_event', channel, event, data: payload, socket_id: this.socketId, ...(userId === undefined ? {} : { user_id: String(userId) }) })
  }

  /** The socket is gone: every subscription ends (members leave, channels vacate), timers stop. */
  closedNow (): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.pingTimer)
    clearTimeout(this.pongTimer)
    clearTimeout(this.signinTimer)
    for (const channel of [...this.subscriptions.keys()]) this.unsubscribe(channel)
    if (this.user !== undefined) this.ctx.registry.signedOut(this.user, this)
  }
}
