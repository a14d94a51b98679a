import fp from 'fastify-plugin'
import { RoomRegistry, type RoomHooks } from './registry.js'
import { accessTo } from '../engine/access.js'
import { proxyError, type ProxyHooks } from '../engine/proxy.js'
import type { Session } from '../engine/sessions.js'
import { clientKeys } from '../store/idempotency.js'
import { WsError } from '../../protocol/errors.js'
import { standardWebhooks, WebhookSender } from '../engine/webhooks.js'

import { RoomName, StatePatch, Offset, Version } from '../../protocol/schemas.js'
import { JoinFields, LeaveFields, PublishFields, UpdateFields } from '../../protocol/client-frames.js'
import { IDEMPOTENCY_KEY_MAX_LENGTH } from '../../protocol/limits.js'

export { RoomName, StatePatch, Offset, Version }

export interface RoomsOptions {
  /** Messages kept per room for recovery [100]. */
  historySize?: number
  /** Rooms one connection may be in at once [50]. */
  maxRoomsPerConnection?: number
  /** Largest serialized room state in bytes [262144]. */
  stateMaxBytes?: number
  /** An empty room leaves memory after this long [60000]. */
  evictAfterMs?: number
  /** How often empty rooms are looked for [evictAfterMs / 2, at most 30000]. */
  sweepIntervalMs?: number
  /**
   * false: publishes skip the store (no history, no durable offsets; acks do
   * not wait for a commit). For measurements and throwaway rooms [true].
   */
  persistMessages?: boolean
  /**
   * Native webhooks (WEBHOOK_URL, WEBHOOK_SECRET, WEBHOOK_EVENTS,
   * WEBHOOK_BATCH_MS): membership transitions, each sent once across the
   * instances, and optionally every published message.
   */
  webhooks?: { url: string, secret: string, events: ReadonlySet<string>, batchMs?: number, retryBaseMs?: number, attempts?: number, staleMs?: number }
}

declare module 'fastify' {
  interface FastifyInstance {
    rooms: RoomRegistry
  }
}

/** The backend's join and publish hooks (PROXY_JOIN_URL, PROXY_PUBLISH_URL) as the registry asks them. */
function backendHooks (proxy: ProxyHooks): RoomHooks {
  const client = proxy.client
  const callerOf = (conn: Session) => ({ clientId: conn.clientId, connectionId: conn.id, protocol: conn.protocol.name })
  return {
    join: client.has('join')
      ? async (conn, room) => {
        const decision = await client.call('join', callerOf(conn), { room })
        if (!decision.allowed) throw proxyError('join', decision, `join ${room}`)
        return decision.answer.data
      }
      : undefined,
    publish: client.has('publish')
      ? async (caller, room, data, idempotencyKey) => {
        const decision = await client.call('publish', caller, { room, data, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) })
        if (!decision.allowed) throw proxyError('publish', decision, `publish to ${room}`)
        // present: the backend's rewrite is what is stored and broadcast
        return 'data' in decision.answer ? decision.answer.data : data
      }
      : undefined
  }
}

export default fp<RoomsOptions>(async function rooms (app, opts) {
  const evictAfterMs = opts.evictAfterMs ?? 60000
  // optional: without the metrics plugin nothing is counted
  const metrics = app.metrics
  // the fanout carries frames and membership to and from the other instances (a no-op on one node)
  const hooks = opts.webhooks
  const sender = hooks === undefined || hooks.events.size === 0
    ? null
    : new WebhookSender({
      urls: [hooks.url],
      encode: standardWebhooks(hooks.secret),
      batchMs: hooks.batchMs,
      retryBaseMs: hooks.retryBaseMs,
      attempts: hooks.attempts,
      // kept in the store until delivered: a restart (or, with Redis, another instance after a crash) sends them again
      outbox: { store: app.store.outbox, ns: 'webhooks:native', staleMs: hooks.staleMs },
      log: app.log,
      logFields: { source: 'native' }
    })
  sender?.resume().catch(() => {})
  const registry = new RoomRegistry(app.store, app.broker, app.presence, {
    historySize: opts.historySize ?? 100,
    maxRoomsPerConnection: opts.maxRoomsPerConnection ?? 50,
    stateMaxBytes: opts.stateMaxBytes ?? 262144,
    evictAfterMs,
    onBroadcast: (type, recipients) => {
      metrics?.fanout.observe(recipients)
      metrics?.messagesOutByType.add(type, recipients)
    },
    persistMessages: opts.persistMessages ?? true,
    hooks: backendHooks(app.proxy),
    onMembership: sender === null
      ? undefined
      : event => { if (hooks?.events.has(event.type) === true) sender.add({ ...event, timestamp: new Date().toISOString() }) }
  }, app.log)
  if (sender !== null && hooks?.events.has('message_published') === true) {
    // the instance that published sends it: once per message
    registry.onPublished(m => sender.add({ type: 'message_published', room: m.room, offset: m.offset, messageId: m.messageId, from: m.from, data: m.data, timestamp: m.timestamp }))
  }
  app.decorate('rooms', registry)
  const roomLimits = { maxRoomsPerConnection: opts.maxRoomsPerConnection ?? 50, roomHistorySize: opts.historySize ?? 100, roomStateMaxBytes: opts.stateMaxBytes ?? 262144 }
  const idempotency = app.idempotency
  const idempotencyLimits = { idempotencyKeyMaxLength: IDEMPOTENCY_KEY_MAX_LENGTH, idempotencyTtlMs: idempotency.opts.ttlMs, idempotencyMaxKeys: idempotency.opts.maxKeys }
  app.dispatcher.addWelcomePart(() => ({ limits: { ...roomLimits, ...idempotencyLimits } }))

  app.dispatcher.register('join', JoinFields, async (conn, msg) => {
    app.auth.authorize(conn.principal, msg.room, 'join')
    const joined = await registry.join(conn, msg.room, msg.since, msg.epoch)
    // a refresh while the join was in flight may have narrowed the rooms claim: the join is undone
    if (accessTo(conn.principal, msg.room) === null && registry.evict(conn, msg.room)) app.auth.authorize(conn.principal, msg.room, 'join')
    return joined
  })

  app.dispatcher.register('leave', LeaveFields, async (conn, msg) => registry.leave(conn, msg.room))

  app.dispatcher.register('publish', PublishFields, async (conn, msg) => {
    app.auth.authorize(conn.principal, msg.room, 'publish')
    await registry.requireMember(conn, msg.room)
    const { value, duplicate } = await idempotency.run(clientKeys(conn.clientId), msg.idempotencyKey, { type: 'publish', room: msg.room, data: msg.data },
      async claim => registry.publish(conn.clientId, msg.room, msg.data, { claim, by: { connectionId: conn.id, protocol: conn.protocol.name } }), result => result as { offset: number, messageId: string })
    const ack = { type: 'ack', room: msg.room, offset: value.offset, messageId: value.messageId }
    return duplicate ? { ...ack, duplicate } : ack
  })

  app.dispatcher.register('update', UpdateFields, async (conn, msg) => {
    app.auth.authorize(conn.principal, msg.room, 'update')
    await registry.requireMember(conn, msg.room)
    const { value, duplicate } = await idempotency.run(clientKeys(conn.clientId), msg.idempotencyKey, { type: 'update', room: msg.room, patch: msg.patch, baseVersion: msg.baseVersion },
      async claim => registry.update(conn.clientId, msg.room, msg.patch, msg.baseVersion, claim), result => result as { version: number })
    const ack = { type: 'ack', room: msg.room, version: value.version }
    return duplicate ? { ...ack, duplicate } : ack
  })

  // the rooms the connect hook named: joined for the client once it is welcomed, each answered with `joined` (no `id`)
  const proxy = app.proxy
  if (proxy.has('connect')) {
    app.sessions.onOpen(conn => {
      const rooms = conn.protocol === app.nativeProtocol ? proxy.sessionGrant(conn)?.rooms : undefined
      if (rooms === undefined || rooms.length === 0) return
      for (const room of rooms) {
        (async () => {
          app.auth.authorize(conn.principal, room, 'join')
          const joined = await registry.join(conn, room, undefined, undefined, { hook: false })
          if (joined !== undefined) conn.send(joined)
        })().catch(err => {
          const e = err instanceof WsError ? err : new WsError('unavailable', `room ${room} is unavailable; retry later`)
          conn.send({ type: 'error', code: e.code, message: `join ${room} (named by the connect hook): ${e.message}`, room, ...e.extra })
        })
      }
    })
  }

  app.sessions.onClose(conn => registry.leaveAll(conn))
  // a refreshed token may allow fewer rooms: those are left (the others see a presence leave), and the client is told
  app.sessions.onRefresh(conn => {
    for (const room of [...conn.rooms]) {
      if (accessTo(conn.principal, room) !== null) continue
      if (registry.evict(conn, room)) conn.send({ type: 'left', room, reason: 'token_refreshed' })
    }
  })

  app.statusReport.section('rooms', () => registry.stats())
  metrics?.collect(() => {
    const { active, members } = registry.stats()
    metrics.roomsActive.set(active)
    metrics.roomMembers.set(members)
  })

  const sweeper = setInterval(() => {
    const evicted = registry.sweep()
    if (evicted > 0) app.log.info({ event: 'room.evicted', evicted, loaded: registry.stats().loaded }, 'evicted empty rooms')
  }, opts.sweepIntervalMs ?? Math.min(30000, Math.max(10, Math.floor(evictAfterMs / 2)))).unref()

  // Registered after the store, so this runs before the store closes.
  app.addHook('onClose', async () => {
    clearInterval(sweeper)
    await sender?.close()
    const started = Date.now()
    await app.store.flush()
    app.log.info({ event: 'shutdown.step', step: 'rooms_flushed', ms: Date.now() - started }, 'pending room writes committed')
  })
}, { name: 'rooms', fastify: '5.x', dependencies: ['store', 'cluster', 'dispatcher', 'sessions', 'status', 'auth', 'metrics', 'proxy'] })
