import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Counter, Gauge } from 'prom-client'
import { loadApps, type PusherApp } from './apps.js'
import pusherHttpApi from './http-api.js'
import { AppRuntime } from './runtime.js'
import { ChannelCache } from './cache.js'
import type { WebhookOptions } from './webhooks.js'
import { CLOSE, ERROR, PusherSocket, closeWithin, errorFrame, newSocketId } from './ws-protocol.js'
import { ConfigError, closeCodeLabel, type CloseReason, type Session, type SessionProtocol } from './deps.js'
import { BRIDGE_ORIGIN, bridgedChannel, bridgedRoom, toPusherEvent, toRoomData } from './bridge.js'

export type { PusherApp } from './apps.js'
export { AppRuntime, pusherNamespace } from './runtime.js'

export interface PusherOptions {
  /** The apps to serve; default: read from app.config (PUSHER_APP_*, PUSHER_APPS_FILE). */
  apps?: PusherApp[]
  /** How long a server ping may go unanswered before the socket is closed with 4201 [30000]. */
  pongTimeoutMs?: number
  /** Webhook delivery tuning (retries, backoff), for tests. */
  webhooks?: WebhookOptions
}

/** The close codes of protocol 7 for the engine's decisions (pusher-js: 4100-4199 back off, 4200-4299 reconnect at once, 4000-4099 never). */
const CLOSE_FOR: Record<CloseReason, number> = {
  slow_consumer: CLOSE.overCapacity,
  flood: CLOSE.overCapacity,
  token_expired: CLOSE.unauthorized,
  auth_timeout: CLOSE.unauthorized,
  admin: CLOSE.unauthorized,
  shutdown: CLOSE.reconnect,
  internal: CLOSE.reconnect
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The Pusher apps served, by app id (empty without PUSHER_APP_* / PUSHER_APPS_FILE). */
    pusher: Map<string, AppRuntime>
  }
}

/** Protocol versions accepted in ?protocol= (Pusher still serves 5 and 6; 7 is current). */
const PROTOCOLS = new Set([5, 6, 7])
const SHUTDOWN_MESSAGE = 'Server closed. Please reconnect shortly.'

/**
 * The Pusher Channels protocol (protocol 7 WebSocket at /app/:key, the signed
 * HTTP API under /apps/:appId, webhooks) as a second protocol of the service.
 * Without an app configured it registers nothing: those routes answer 404.
 *
 * Pusher clients authenticate by app key and channel signatures, not by the
 * service's JWT: the WebSocket route is registered outside the token-protected
 * context, but with the Origin check and the connection limits of /ws.
 */
export default fp<PusherOptions>(async function pusher (app: FastifyInstance, opts) {
  const cfg = app.config
  const apps = opts.apps ?? loadApps(cfg)
  // a bridged private channel's only native gate is the token's rooms claim: there must be tokens
  const open = apps.find(a => a.bridgePrivate)
  if (open && !app.auth.enabled) {
    throw new ConfigError(`Invalid configuration: Pusher app ${open.id}: bridgePrivate (PUSHER_BRIDGE_PRIVATE) needs AUTH_SECRET (or AUTH_JWKS_URL or AUTH_PUBLIC_KEY), or every native client could read and write its private and presence channels`)
  }
  const byId = new Map<string, AppRuntime>()
  const byKey = new Map<string, AppRuntime>()
  app.decorate('pusher', byId)
  if (apps.length === 0) return

  const registers = [app.metrics.registry]
  // counted as plain numbers and added at scrape time: a broadcast to 1,000 sockets costs 1,000 Map updates, not label lookups
  const tally = new Map<string, number>()
  new Counter({ // eslint-disable-line no-new
    name: 'switchboard_pusher_messages_total',
    help: 'Pusher protocol frames, by direction (in, out) and kind',
    labelNames: ['direction', 'kind'],
    registers,
    collect () {
      for (const [k, n] of tally) {
        const bar = k.indexOf('|')
        this.inc({ direction: k.slice(0, bar), kind: k.slice(bar + 1) }, n)
      }
      tally.clear()
    }
  })
  const connections = new Gauge({ name: 'switchboard_pusher_connections', help: 'Open Pusher protocol connections, by app', labelNames: ['app'], registers })
  const channels = new Gauge({ name: 'switchboard_pusher_channels', help: 'Occupied Pusher channels on this instance, by app', labelNames: ['app'], registers })
  const closes = new Counter({ name: 'switchboard_pusher_connection_closes_total', help: 'Closed Pusher protocol connections by close code', labelNames: ['code'], registers })
  const triggered = new Counter({ name: 'switchboard_pusher_api_events_total', help: 'Events triggered through the Pusher HTTP API (one per channel)', registers })
  const webhooks = new Counter({ name: 'switchboard_pusher_webhooks_total', help: 'Pusher webhook deliveries by outcome (delivered, retried, failed)', labelNames: ['outcome'], registers })
  // the protocol's frame kinds are few and fixed; anything else a client sends is one label
  const KINDS = new Set(['pusher:ping', 'pusher:pong', 'pusher:subscribe', 'pusher:unsubscribe', 'pusher:signin', 'client_event', 'event'])
  const count = (direction: 'in' | 'out', kind: string, n = 1) => {
    const key = `${direction}|${KINDS.has(kind) ? kind : 'other'}`
    tally.set(key, (tally.get(key) ?? 0) + n)
  }

  const limitCloses = new Counter({ name: 'switchboard_pusher_limit_closes_total', help: 'Pusher connections closed by a limit (4100): slow_consumer (WS_MAX_BUFFERED_BYTES), flood (WS_MESSAGES_PER_SECOND)', labelNames: ['reason'], registers })
  const bridges = new Counter({ name: 'switchboard_pusher_bridged_total', help: 'Messages bridged between native rooms and Pusher channels, by direction (to_room, to_channel) and outcome (bridged, dropped)', labelNames: ['direction', 'outcome'], registers })
  // Pusher → native: an event of a bridged channel becomes a message of its room (stored, with an offset, on every instance)
  const toRoom = (a: PusherApp, channel: string, event: string, data: string, userId?: string | number) => {
    const room = bridgedRoom(a, channel)
    if (room === undefined) return
    app.rooms.publish(`pusher:${a.id}`, room, toRoomData(event, data, userId), { origin: BRIDGE_ORIGIN }).then(() => {
      bridges.inc({ direction: 'to_room', outcome: 'bridged' })
    }, err => {
      bridges.inc({ direction: 'to_room', outcome: 'dropped' })
      app.log.warn({ event: 'pusher.bridge_failed', appId: a.id, channel, room, reason: (err as Error).message }, 'a Pusher event could not be published to its bridged room')
    })
  }
  for (const a of apps) {
    const rt = new AppRuntime(a, app.log, {
      activityTimeoutS: cfg.PUSHER_ACTIVITY_TIMEOUT_S,
      pongTimeoutMs: opts.pongTimeoutMs ?? 30000,
      count,
      broker: app.broker,
      presence: app.presence,
      cache: new ChannelCache(app.store.lastEvents, a.id),
      maxDepth: cfg.JSON_MAX_DEPTH,
      messagesPerSecond: cfg.WS_MESSAGES_PER_SECOND,
      bridge: a.bridgeRoomPrefix === undefined ? undefined : (channel, event, data, userId) => toRoom(a, channel, event, data, userId),
      webhooks: { ...opts.webhooks, outbox: app.store.outbox, outcome: outcome => webhooks.inc({ outcome }) }
    })
    byId.set(a.id, rt)
    byKey.set(a.key, rt)
    // batches an earlier run left undelivered (kept in the store) go out again
    rt.webhooks.resume().catch(() => {})
  }
  // terminate_connections reaches every instance
  for (const rt of byId.values()) {
    rt.listenForTerminations().catch(err => {
      app.log.warn({ event: 'pusher.fanout_failed', appId: rt.app.id, channel: '#terminate', reason: (err as Error).message }, 'terminate_connections of other instances will not reach this one')
    })
  }
  // native → Pusher: a message published in a bridged room (by a member or the HTTP API, on this instance) is an event of its channel
  const bridged = [...byId.values()].filter(rt => rt.app.bridgeRoomPrefix !== undefined)
  if (bridged.length > 0) {
    app.rooms.onPublished((message, origin) => {
      if (origin === BRIDGE_ORIGIN) return
      for (const rt of bridged) {
        const channel = bridgedChannel(rt.app, message.room)
        if (channel === undefined) continue
        const { event, data } = toPusherEvent(message)
        if (Buffer.byteLength(data) > rt.app.maxEventPayloadBytes) {
          bridges.inc({ direction: 'to_channel', outcome: 'dropped' })
          app.log.warn({ event: 'pusher.bridge_dropped', appId: rt.app.id, channel, room: message.room, bytes: Buffer.byteLength(data), maxBytes: rt.app.maxEventPayloadBytes }, 'a room message is larger than the Pusher app\'s maxEventPayloadBytes: not sent to the channel')
          continue
        }
        rt.deliver(channel, event, data).crossed.catch(() => {})
        bridges.inc({ direction: 'to_channel', outcome: 'bridged' })
      }
    })
    app.log.info({ event: 'pusher.bridge_enabled', apps: bridged.map(rt => ({ id: rt.app.id, roomPrefix: rt.app.bridgeRoomPrefix, private: rt.app.bridgePrivate })) }, 'native rooms bridged to Pusher channels')
  }
  app.metrics.collect(() => {
    for (const rt of byId.values()) {
      connections.set({ app: rt.app.id }, rt.sockets.size)
      channels.set({ app: rt.app.id }, rt.registry.size)
    }
  })
  app.statusReport.section('pusher', () => ({
    apps: [...byId.values()].map(rt => ({ id: rt.app.id, connections: rt.sockets.size, channels: rt.registry.size, webhooks: rt.app.webhooks.length, ...(rt.app.bridgeRoomPrefix === undefined ? {} : { bridge: { roomPrefix: rt.app.bridgeRoomPrefix, private: rt.app.bridgePrivate } }) }))
  }))
  app.log.info({ event: 'pusher.enabled', apps: apps.map(a => a.id) }, 'Pusher Channels protocol enabled')

  // Pusher sockets are engine sessions: the engine owns the message rate, the send-buffer cap, dead peers,
  // shutdown and the admin listing; this protocol says each in Pusher's words and holds what its frames mean.
  const sockets = new WeakMap<Session, { rt: AppRuntime, socket: PusherSocket }>()
  const protocol: SessionProtocol = {
    name: 'pusher',
    closeCode: reason => CLOSE_FOR[reason],
    open: session => sockets.get(session)?.socket.start(),
    frame: (session, data, isBinary) => sockets.get(session)?.socket.handle(isBinary ? null : data.toString()),
    rateLimited: session => sockets.get(session)?.socket.rateLimited(),
    failed: session => sockets.get(session)?.socket.send(errorFrame(ERROR.invalid, 'the server could not handle this message')),
    // Pusher says why before it closes: pusher:error with the close code
    closing: (session, reason, code, message) => {
      const found = sockets.get(session)
      if (!found) return
      if (reason === 'slow_consumer' || reason === 'flood') limitCloses.inc({ reason })
      found.socket.send(errorFrame(code, reason === 'slow_consumer' ? 'Over capacity: send buffer full, reading too slowly' : reason === 'flood' ? `Over capacity: more than ${cfg.WS_MESSAGES_PER_SECOND} messages per second` : message))
    },
    // 4200: pusher-js reconnects at once (to another instance behind the load balancer)
    goodbye: session => {
      sockets.get(session)?.socket.send(errorFrame(CLOSE.reconnect, SHUTDOWN_MESSAGE))
      return SHUTDOWN_MESSAGE
    },
    // 4009: pusher-js does not reconnect
    disconnected: (session, reason) => sockets.get(session)?.socket.send(errorFrame(CLOSE.unauthorized, reason)),
    closed: session => {
      const found = sockets.get(session)
      if (!found) return
      found.rt.sockets.delete(found.socket)
      found.socket.closedNow()
    },
    channels: session => sockets.get(session)?.socket.subscriptions.keys() ?? []
  }

  // refusals before it is a session: told in Pusher's words, then closed
  const refusal = (request: FastifyRequest<{ Params: { key: string }, Querystring: { protocol?: string } }>): [number, string] | null => {
    const rt = byKey.get(request.params.key)
    if (!rt) return [CLOSE.unknownApp, `App key ${request.params.key.slice(0, 64)} does not exist.`]
    if (!rt.app.enabled) return [CLOSE.appDisabled, 'The app is not enabled.']
    const version = request.query.protocol
    if (version === undefined) return [CLOSE.noProtocol, 'No protocol version supplied: connect with ?protocol=7']
    if (!/^\d+$/.test(version)) return [CLOSE.invalidVersion, 'Invalid version string format: protocol must be an integer']
    if (!PROTOCOLS.has(Number(version))) return [CLOSE.unsupportedProtocol, `Unsupported protocol version ${version.slice(0, 8)}: this server speaks 5 to 7`]
    if (rt.sockets.size >= rt.app.maxConnections) return [CLOSE.overQuota, `Application is over connection quota (${rt.app.maxConnections} connections)`]
    return null
  }

  app.upgradeRoute<{ Params: { key: string }, Querystring: { protocol?: string } }>({
    url: '/app/:key',
    protocol,
    token: 'none',
    usage: 'GET /app/:key is the Pusher protocol 7 WebSocket endpoint: connect with pusher-js or another Pusher client',
    schema: { hide: true },
    admit (socket, request) {
      const refused = refusal(request)
      if (refused === null) return true
      const [code, message] = refused
      socket.on('error', () => socket.terminate())
      socket.send(JSON.stringify({ event: 'pusher:error', data: { code, message } }))
      closeWithin(socket, code, message)
      closes.inc({ code: closeCodeLabel(code) })
      request.log.info({ event: 'pusher.connection_refused', code, clientKey: request.clientKey, appId: byKey.get(request.params.key)?.app.id }, message)
      return false
    },
    clientId: () => `pusher-${newSocketId()}`,
    accepted (session, request) {
      const rt = byKey.get(request.params.key) as AppRuntime
      const conn = new PusherSocket(session, rt.ctx, session.clientId.slice('pusher-'.length))
      rt.sockets.add(conn)
      sockets.set(session, { rt, socket: conn })
      session.socket.once('close', (code, reason) => {
        closes.inc({ code: closeCodeLabel(code) })
        request.log.info({ event: 'pusher.connection_close', appId: rt.app.id, socketId: conn.socketId, clientKey: conn.clientKey, code, reason: reason.toString().slice(0, 120), durationMs: Date.now() - conn.openedAt }, 'Pusher connection closed')
      })
      request.log.info({ event: 'pusher.connection_open', appId: rt.app.id, socketId: conn.socketId, clientKey: conn.clientKey, connections: rt.sockets.size }, 'Pusher connection opened')
    }
  })

  await app.register(pusherHttpApi, { byId, triggered: n => triggered.inc(n) })

  app.addHook('onClose', async () => {
    await Promise.all([...byId.values()].map(rt => rt.webhooks.close()))
  })
}, { name: 'pusher', fastify: '5.x', dependencies: ['config', 'rooms', 'metrics', 'status', 'sessions', 'upgrade-routes', 'auth', 'cluster', 'store'] })
