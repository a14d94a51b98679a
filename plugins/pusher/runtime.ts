import type { FastifyBaseLogger } from 'fastify'
import type { PusherApp } from './apps.js'
import { ChannelRegistry, isCache, isPresence, USER_CHANNEL_PREFIX, type Member } from './channels/registry.js'
import { Webhooks, type WebhookOptions } from './webhooks.js'
import { CLOSE, frame, type AppContext, type PresenceMember, type PusherSocket } from './ws-protocol.js'
import type { ChannelCache } from './cache.js'
import type { Broker, JoinOutcome, Presence } from './deps.js'

/** The namespace of an app's channels in the broker and in presence. */
export function pusherNamespace (appId: string): string {
  return `pusher:${appId}`
}

/** The channel that carries terminate_connections to every instance (no channel name contains `#` but `#server-to-user-`). */
export const TERMINATE = '#terminate'

export interface RuntimeOptions {
  activityTimeoutS: number
  pongTimeoutMs: number
  webhooks?: WebhookOptions
  count: AppContext['count']
  /** Channel frames to and from the other instances. */
  broker: Broker
  /** Occupancy and presence members across instances (and the member cap). */
  presence: Presence
  /** Cache channels' last events. */
  cache: ChannelCache
  /** An event sent to the app's subscribers from a Pusher source (HTTP API, client event): the bridge passes it to native rooms. */
  bridge?: (channel: string, event: string, data: string, userId?: string | number) => void
  maxDepth: number
  messagesPerSecond: number
}

/**
 * One app at run time: its registry of local subscriptions, its open
 * sockets, its webhooks, and what a local change means across the instances:
 * a channel's first and last subscriber anywhere (occupied, vacated), a user's
 * first and last socket anywhere (member_added, member_removed), each decided
 * once by presence; channel frames cross through the broker in the app's own
 * namespace.
 */
export class AppRuntime {
  readonly registry: ChannelRegistry
  readonly sockets = new Set<PusherSocket>()
  readonly webhooks: Webhooks
  readonly ctx: AppContext
  readonly namespace: string
  /** Channels occupied here: settles once frames published on other instances reach this one. */
  private readonly subscribed = new Map<string, Promise<void>>()
  /** Channels occupied here: settles once presence said whether the channel is occupied anywhere (and its webhook is queued). */
  private readonly occupying = new Map<string, Promise<unknown>>()
  /** A user's first socket here being admitted to a presence channel, so a second one waits for the same answer. */
  private readonly joining = new Map<string, Promise<JoinOutcome>>()
  /** Users signed in here, while this instance listens for their events from the others. */
  private readonly users = new Map<string, Promise<void>>()
  private readonly presence: Presence
  private readonly broker: Broker
  private readonly cache: ChannelCache

  constructor (readonly app: PusherApp, private readonly log: FastifyBaseLogger, opts: RuntimeOptions) {
    this.presence = opts.presence
    this.broker = opts.broker
    this.cache = opts.cache
    this.namespace = pusherNamespace(app.id)
    this.webhooks = new Webhooks(app, log, opts.webhooks)
    const ns = this.namespace
    const hook = (e: Record<string, unknown>) => this.webhooks.add(e)
    const failed = (step: string, channel: string) => (err: unknown) => {
      log.warn({ event: 'pusher.cluster_failed', appId: app.id, channel, step, reason: (err as Error).message }, 'a Pusher channel transition could not be counted across instances')
      return false
    }
    this.registry = new ChannelRegistry({
      occupied: channel => {
        this.subscribed.set(channel, opts.broker.subscribe(ns, channel).catch(err => {
          log.warn({ event: 'pusher.fanout_failed', appId: app.id, channel, reason: (err as Error).message }, 'a Pusher channel could not subscribe to the other instances')
        }))
        this.occupying.set(channel, opts.presence.occupy(ns, channel).catch(failed('occupied', channel)).then(first => { if (first) hook({ name: 'channel_occupied', channel }) }))
      },
      vacated: channel => {
        this.subscribed.delete(channel)
        this.occupying.delete(channel)
        opts.broker.unsubscribe(ns, channel)
        opts.presence.vacate(ns, channel).then(last => { if (last) hook({ name: 'channel_vacated', channel }) })
      },
      counted: (channel, n) => opts.presence.count(ns, channel, n),
      // events to a user reach the instances where it is signed in, subscribed to its channel or not
      userArrived: userId => {
        const listening = opts.broker.subscribe(ns, USER_CHANNEL_PREFIX + userId).catch(err => {
          // a failed subscribe gives its count back: nothing to unsubscribe when the user leaves
          if (this.users.get(userId) === listening) this.users.delete(userId)
          log.warn({ event: 'pusher.fanout_failed', appId: app.id, channel: USER_CHANNEL_PREFIX, reason: (err as Error).message }, 'events sent to a signed-in user on other instances will not reach this one')
        })
        this.users.set(userId, listening)
      },
      userLeft: userId => {
        if (this.users.delete(userId)) opts.broker.unsubscribe(ns, USER_CHANNEL_PREFIX + userId)
      }
    })
    // frames of this app's channels published on other instances: delivered to the subscribers here
    opts.broker.handle(ns, (channel, payload, exceptSocketId) => {
      if (channel === TERMINATE) {
        this.terminate(payload)
        return
      }
      this.ctx.count('out', 'event', this.registry.broadcast(channel, payload, exceptSocketId))
    })
    // members and subscriptions of a crashed instance: what their removal means fires once, here
    opts.presence.onGone(ns, (channel, gone, vacated) => {
      for (const { key, info } of gone) {
        const member = info as PresenceMember | undefined
        if (this.registry.hasMember(channel, key)) continue
        this.webhooks.add({ name: 'member_removed', channel, user_id: key })
        this.announce(channel, frame('pusher_internal:member_removed', { user_id: member?.userId ?? key }, channel))
      }
      if (vacated && this.registry.get(channel) === undefined) this.webhooks.add({ name: 'channel_vacated', channel })
      log.info({ event: 'pusher.instance_swept', appId: app.id, channel, membersGone: gone.length, vacated }, 'a crashed instance\'s subscriptions and members left a Pusher channel')
    })
    this.ctx = {
      app,
      registry: this.registry,
      log,
      activityTimeoutS: opts.activityTimeoutS,
      pongTimeoutMs: opts.pongTimeoutMs,
      webhook: hook,
      count: opts.count,
      members: channel => opts.presence.members(ns, channel).then(found => new Map([...found].map(([key, info]) => [key, info as PresenceMember]))),
      cached: channel => this.cache.recall(channel),
      reachable: channel => this.subscribed.get(channel) ?? Promise.resolve(),
      userReachable: userId => this.users.get(userId) ?? Promise.resolve(),
      publish: (channel, payload, exceptSocketId) => opts.broker.publish(ns, channel, payload, exceptSocketId),
      admitMember: (channel, key, member) => this.admitMember(channel, key, member),
      memberLeft: (channel, key, member) => this.memberLeft(channel, key, member),
      memberAdded: (channel, key, member, socketId) => this.memberAdded(channel, key, member, socketId),
      announce: (channel, payload, exceptSocketId) => this.announce(channel, payload, exceptSocketId),
      bridge: opts.bridge ?? (() => {}),
      maxDepth: opts.maxDepth,
      messagesPerSecond: opts.messagesPerSecond
    }
  }

  /**
   * A user's first socket here asks to join a presence channel: `full` when
   * the channel has its maximum of members on all instances, `added` when the
   * user was on no instance (then member_added goes out, once across the cluster).
   */
  private admitMember (channel: string, key: string, member: PresenceMember): Promise<JoinOutcome> {
    const id = `${channel}\n${key}`
    const pending = this.joining.get(id)
    if (pending) return pending.then(outcome => outcome === 'full' ? 'full' : 'present')
    const joined = this.presence.join(this.namespace, channel, key, member, this.app.maxPresenceMembers).finally(() => this.joining.delete(id))
    this.joining.set(id, joined)
    return joined
  }

  /** A user who was on no instance joined with `socketId`: member_added to the others and the webhook, after the channel's occupied one. */
  private memberAdded (channel: string, key: string, member: PresenceMember, socketId: string): void {
    this.announce(channel, frame('pusher_internal:member_added', { user_id: member.userId, user_info: member.info }, channel), socketId)
    const occupied = this.occupying.get(channel) ?? Promise.resolve()
    occupied.then(() => this.webhooks.add({ name: 'member_added', channel, user_id: key }), () => {})
  }

  /** A user's last socket here left: member_removed when it is on no instance any more. */
  private memberLeft (channel: string, key: string, member: Member): void {
    this.presence.leave(this.namespace, channel, key).then(last => {
      if (!last) return
      this.webhooks.add({ name: 'member_removed', channel, user_id: key })
      this.announce(channel, frame('pusher_internal:member_removed', { user_id: member.userId }, channel))
    }, () => {})
  }

  /** A frame to the channel's subscribers here and on every other instance. */
  announce (channel: string, payload: string, exceptSocketId?: string): void {
    this.ctx.count('out', 'event', this.registry.broadcast(channel, payload, exceptSocketId))
    this.ctx.publish(channel, payload, exceptSocketId).catch(() => {})
  }

  /**
   * An event from the HTTP API: cached on cache channels, sent to every
   * subscriber but `exceptSocketId` here, and to the bridged room. Resolves
   * once it reached the other instances; rejects (503) when it cannot.
   */
  async trigger (channel: string, name: string, data: string, exceptSocketId?: string): Promise<number> {
    const { reached, crossed } = this.deliver(channel, name, data, exceptSocketId)
    this.ctx.bridge(channel, name, data)
    await crossed
    return reached
  }

  /** An event to the channel's subscribers on every instance (cached on cache channels), without the bridge. */
  deliver (channel: string, name: string, data: string, exceptSocketId?: string): { reached: number, crossed: Promise<void> } {
    const payload = frame(name, data, channel)
    // a cache channel's event is answered once it is the channel's last event in the store too
    const published = this.ctx.publish(channel, payload, exceptSocketId)
    const crossed = isCache(channel) ? Promise.all([published, this.cache.remember(channel, { event: name, data })]).then(() => {}) : published
    const reached = this.registry.broadcast(channel, payload, exceptSocketId)
    this.ctx.count('out', 'event', reached)
    return { reached, crossed }
  }

  /** A presence channel's members on every instance. */
  async members (channel: string): Promise<Array<{ userId: string | number }>> {
    const all = new Map<string, { userId: string | number }>(await this.ctx.members(channel))
    for (const [key, m] of this.registry.get(channel)?.members ?? []) all.set(key, m)
    return [...all.values()]
  }

  /** `info` of a channel as the HTTP API reports it, across every live instance. */
  async info (channel: string, fields: Set<string>): Promise<{ user_count?: number, subscription_count?: number }> {
    const out: { user_count?: number, subscription_count?: number } = {}
    if (fields.has('user_count') && isPresence(channel)) out.user_count = (await this.members(channel)).length
    if (fields.has('subscription_count')) out.subscription_count = await this.subscriptionCount(channel)
    return out
  }

  /** Subscriptions to the channel on every live instance. */
  async subscriptionCount (channel: string): Promise<number> {
    return await this.presence.subscriptions(this.namespace, channel) + (this.registry.get(channel)?.subscribers.size ?? 0)
  }

  /** The channels occupied on some live instance, in name order. */
  async channelNames (): Promise<string[]> {
    const names = await this.presence.channels(this.namespace)
    for (const ch of this.registry.all()) names.add(ch.name)
    return [...names].sort()
  }

  /** A cache channel's last event triggered on any instance, within the cache TTL. */
  async cached (channel: string): Promise<{ event: string, data: string } | undefined> {
    return await this.cache.recall(channel)
  }

  /** Closes the user's sockets on this instance with 4009 (pusher-js does not reconnect); returns how many. */
  terminate (userId: string): number {
    const sockets = this.registry.socketsOf(userId) as PusherSocket[]
    for (const s of sockets) s.refuse(CLOSE.unauthorized, 'You got disconnected by the app.')
    return sockets.length
  }

  /** terminate_connections: the user's sockets here, and on every other instance; rejects (503) when it cannot reach them. */
  async terminateEverywhere (userId: string): Promise<number> {
    const crossed = this.broker.publish(this.namespace, TERMINATE, userId)
    const n = this.terminate(userId)
    await crossed
    return n
  }

  /** Frames of `#terminate` reach this instance from the others. */
  listenForTerminations (): Promise<void> {
    return this.broker.subscribe(this.namespace, TERMINATE)
  }
}
