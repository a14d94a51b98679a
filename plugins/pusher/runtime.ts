import type { FastifyBaseLogger } from 'fastify'
import type { PusherApp } from './apps.js'
import { ChannelRegistry, isCache, isPresence } from './channels/registry.js'
import { Webhooks, type WebhookOptions } from './webhooks.js'
import { CLOSE, frame, type AppContext, type PusherSocket } from './ws-protocol.js'

export interface RuntimeOptions {
  activityTimeoutS: number
  pongTimeoutMs: number
  webhooks?: WebhookOptions
  count: AppContext['count']
  /** A channel became occupied or vacant on this instance (metrics, logs). */
  onChannel?: (app: PusherApp, channel: string, occupied: boolean) => void
}

/** One app at run time: its registry, open sockets, webhooks, and the triggering the HTTP API does. */
export class AppRuntime {
  readonly registry: ChannelRegistry
  readonly sockets = new Set<PusherSocket>()
  readonly webhooks: Webhooks
  readonly ctx: AppContext

  constructor (readonly app: PusherApp, log: FastifyBaseLogger, opts: RuntimeOptions) {
    this.webhooks = new Webhooks(app, log, opts.webhooks)
    const hook = (e: Record<string, unknown>) => this.webhooks.add(e)
    this.registry = new ChannelRegistry({
      occupied: channel => {
        opts.onChannel?.(app, channel, true)
        hook({ name: 'channel_occupied', channel })
      },
      vacated: channel => {
        opts.onChannel?.(app, channel, false)
        hook({ name: 'channel_vacated', channel })
      },
      memberAdded: (channel, userId) => hook({ name: 'member_added', channel, user_id: userId }),
      memberRemoved: (channel, userId) => hook({ name: 'member_removed', channel, user_id: userId })
    })
    this.ctx = {
      app,
      registry: this.registry,
      log,
      activityTimeoutS: opts.activityTimeoutS,
      pongTimeoutMs: opts.pongTimeoutMs,
      webhook: hook,
      count: opts.count
    }
  }

  /** An event from the HTTP API (or a bridge): cached on cache channels, sent to every subscriber but `exceptSocketId`. */
  trigger (channel: string, name: string, data: string, exceptSocketId?: string): number {
    if (isCache(channel)) this.registry.remember(channel, name, data)
    return this.registry.broadcast(channel, frame(name, data, channel), exceptSocketId)
  }

  /** `info` of a channel as the HTTP API reports it. */
  info (channel: string, fields: Set<string>): { user_count?: number, subscription_count?: number } {
    const ch = this.registry.get(channel)
    const out: { user_count?: number, subscription_count?: number } = {}
    if (fields.has('user_count') && isPresence(channel)) out.user_count = ch?.members.size ?? 0
    if (fields.has('subscription_count')) out.subscription_count = ch?.subscribers.size ?? 0
    return out
  }

  /** Closes every socket signed in as the user with 4009 (pusher-js does not reconnect); returns how many. */
  terminate (userId: string): number {
    const sockets = this.registry.socketsOf(userId) as PusherSocket[]
    for (const s of sockets) s.refuse(CLOSE.unauthorized, 'You got disconnected by the app.')
    return sockets.length
  }
}
