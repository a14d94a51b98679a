import type { FastifyBaseLogger } from 'fastify'
import type { PusherApp } from './apps.js'
import { CACHE_TTL_MS, ChannelRegistry, isCache, isPresence } from './channels/registry.js'
import { Webhooks, type WebhookOptions } from './webhooks.js'
import { CLOSE, frame, type AppContext, type PusherSocket } from './ws-protocol.js'
import type { Fanout } from './deps.js'
import type { ClusterState } from './cluster.js'

/**
 * The fanout room that carries a Pusher channel's frames between instances. The
 * `/` keeps it apart from every native room (their names cannot contain one).
 */
export function fanoutRoom (appId: string, channel: string): string {
  return `pusher/${appId}/${channel}`
}

/** The fanout "channel" that carries terminate_connections to every instance (no channel name contains `#` but `#server-to-user-`). */
export const TERMINATE = '#terminate'

export interface RuntimeOptions {
  activityTimeoutS: number
  pongTimeoutMs: number
  webhooks?: WebhookOptions
  count: AppContext['count']
  /** The other instances (app.fanout): channel frames cross through it. */
  fanout: Fanout
  /** Occupancy and presence members across instances. */
  cluster: ClusterState
  /** An event sent to the app's subscribers from a Pusher source (HTTP API, client event): the bridge passes it to native rooms. */
  bridge?: (channel: string, event: string, data: string, userId?: string | number) => void
  maxDepth: number
  messagesPerSecond: number
  /** A channel became occupied or vacant on this instance (metrics, logs). */
  onChannel?: (app: PusherApp, channel: string, occupied: boolean) => void
}

/** One app at run time: its registry, open sockets, webhooks, and the triggering the HTTP API does. */
export class AppRuntime {
  readonly registry: ChannelRegistry
  readonly sockets = new Set<PusherSocket>()
  readonly webhooks: Webhooks
  readonly ctx: AppContext
  /** Channels occupied here: settles once frames published on other instances reach this one. */
  private readonly subscribed = new Map<string, Promise<void>>()

  private readonly cluster: ClusterState
  private readonly fanout: Fanout

  constructor (readonly app: PusherApp, private readonly log: FastifyBaseLogger, opts: RuntimeOptions) {
    this.cluster = opts.cluster
    this.fanout = opts.fanout
    this.webhooks = new Webhooks(app, log, opts.webhooks)
    const hook = (e: Record<string, unknown>) => this.webhooks.add(e)
    const cluster = opts.cluster
    // a transition here is the cluster's only when the shared count says so: then its event fires, once
    const decided = (what: string, channel: string, p: Promise<boolean>, then: () => void) => {
      p.then(yes => { if (yes) then() }, err => {
        log.warn({ event: 'pusher.cluster_failed', appId: app.id, channel, step: what, reason: (err as Error).message }, 'a Pusher channel transition could not be counted across instances')
      })
    }
    this.registry = new ChannelRegistry({
      occupied: channel => {
        this.subscribed.set(channel, opts.fanout.subscribeRoom(fanoutRoom(app.id, channel)).catch(err => {
          log.warn({ event: 'pusher.fanout_failed', appId: app.id, channel, reason: (err as Error).message }, 'a Pusher channel could not subscribe to the other instances')
        }))
        opts.onChannel?.(app, channel, true)
        decided('occupied', channel, cluster.channelJoined(app.id, channel), () => hook({ name: 'channel_occupied', channel }))
      },
      vacated: channel => {
        this.subscribed.delete(channel)
        opts.fanout.unsubscribeRoom(fanoutRoom(app.id, channel))
        opts.onChannel?.(app, channel, false)
        decided('vacated', channel, cluster.channelLeft(app.id, channel), () => hook({ name: 'channel_vacated', channel }))
      },
      memberAdded: (channel, userKey, member, socketId) => {
        decided('member_added', channel, cluster.memberJoined(app.id, channel, userKey, { userId: member.userId, info: member.info }), () => {
          hook({ name: 'member_added', channel, user_id: userKey })
          const payload = frame('pusher_internal:member_added', { user_id: member.userId, user_info: member.info }, channel)
          this.ctx.count('out', 'event', this.registry.broadcast(channel, payload, socketId))
          this.ctx.publish(channel, payload, socketId)
        })
      },
      counted: (channel, n) => cluster.channelCount(app.id, channel, n),
      memberRemoved: (channel, userKey, member) => {
        decided('member_removed', channel, cluster.memberLeft(app.id, channel, userKey), () => {
          hook({ name: 'member_removed', channel, user_id: userKey })
          const payload = frame('pusher_internal:member_removed', { user_id: member.userId }, channel)
          this.ctx.count('out', 'event', this.registry.broadcast(channel, payload))
          this.ctx.publish(channel, payload)
        })
      }
    })
    this.ctx = {
      app,
      registry: this.registry,
      log,
      activityTimeoutS: opts.activityTimeoutS,
      pongTimeoutMs: opts.pongTimeoutMs,
      webhook: hook,
      count: opts.count,
      members: channel => cluster.members(app.id, channel),
      cached: async channel => this.registry.cached(channel) ?? await cluster.cached(app.id, channel) ?? undefined,
      reachable: channel => this.subscribed.get(channel) ?? Promise.resolve(),
      publish: (channel, payload, exceptSocketId) => opts.fanout.publishToRoom(fanoutRoom(app.id, channel), payload, exceptSocketId),
      bridge: opts.bridge ?? (() => {}),
      maxDepth: opts.maxDepth,
      messagesPerSecond: opts.messagesPerSecond
    }
  }

  /** An event from the HTTP API: cached on cache channels, sent to every subscriber but `exceptSocketId`, and to the bridged room. */
  trigger (channel: string, name: string, data: string, exceptSocketId?: string): number {
    const n = this.deliver(channel, name, data, exceptSocketId)
    this.ctx.bridge(channel, name, data)
    return n
  }

  /** An event to the channel's subscribers on every instance (cached on cache channels), without the bridge. */
  deliver (channel: string, name: string, data: string, exceptSocketId?: string): number {
    if (isCache(channel)) {
      this.registry.remember(channel, name, data)
      this.cluster.remember(this.app.id, channel, name, data, CACHE_TTL_MS)
    }
    const payload = frame(name, data, channel)
    this.ctx.publish(channel, payload, exceptSocketId)
    const n = this.registry.broadcast(channel, payload, exceptSocketId)
    this.ctx.count('out', 'event', n)
    return n
  }

  /** A presence channel's members on every instance (this instance's when there is no cluster). */
  async members (channel: string): Promise<Array<{ userId: string | number }>> {
    const all = new Map<string, { userId: string | number }>(await this.ctx.members(channel) ?? [])
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

  /** Subscriptions to the channel on every live instance (this instance's without a cluster). */
  async subscriptionCount (channel: string): Promise<number> {
    return await this.cluster.subscriptionCount(this.app.id, channel) ?? this.registry.get(channel)?.subscribers.size ?? 0
  }

  /** The channels occupied on some live instance, in name order. */
  async channelNames (): Promise<string[]> {
    const names = new Set(await this.cluster.channels(this.app.id) ?? [])
    for (const ch of this.registry.all()) names.add(ch.name)
    return [...names].sort()
  }

  /** A cache channel's last event triggered on any instance, within the cache TTL. */
  async cached (channel: string): Promise<{ event: string, data: string } | undefined> {
    return await this.ctx.cached(channel)
  }

  /** Closes the user's sockets on this instance with 4009 (pusher-js does not reconnect); returns how many. */
  terminate (userId: string): number {
    const sockets = this.registry.socketsOf(userId) as PusherSocket[]
    for (const s of sockets) s.refuse(CLOSE.unauthorized, 'You got disconnected by the app.')
    return sockets.length
  }

  /** terminate_connections: the user's sockets here, and on every other instance (through the fanout). */
  terminateEverywhere (userId: string): number {
    this.fanout.publishToRoom(fanoutRoom(this.app.id, TERMINATE), userId)
    return this.terminate(userId)
  }

  /**
   * Entries of crashed instances (heartbeat expired) leave Redis; what their
   * removal means fires here, once across the instances: member_removed (to
   * subscribers everywhere, and the webhook) for users with no socket left,
   * channel_vacated for channels with no subscriber left.
   */
  async sweepDead (): Promise<void> {
    let swept
    try {
      swept = await this.cluster.sweep(this.app.id)
    } catch (err) {
      this.log.warn({ event: 'pusher.cluster_failed', appId: this.app.id, step: 'sweep', reason: (err as Error).message }, 'crashed instances\' Pusher entries could not be swept')
      return
    }
    for (const { channel, gone, vacated } of swept) {
      for (const { key, member } of gone) {
        this.webhooks.add({ name: 'member_removed', channel, user_id: key })
        const payload = frame('pusher_internal:member_removed', { user_id: member.userId }, channel)
        this.ctx.count('out', 'event', this.registry.broadcast(channel, payload))
        this.ctx.publish(channel, payload)
      }
      if (vacated) this.webhooks.add({ name: 'channel_vacated', channel })
      if (gone.length > 0 || vacated) this.log.info({ event: 'pusher.instance_swept', appId: this.app.id, channel, membersGone: gone.length, vacated }, 'a crashed instance\'s subscriptions and members left a Pusher channel')
    }
  }
}
