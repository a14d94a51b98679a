import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, preHandlerAsyncHookHandler, RouteGenericInterface } from 'fastify'
import { randomUUID } from 'node:crypto'
import type { WebSocket } from 'ws'
import { anonymousClientId, requestedClientId, textFrame, type Session, type SessionProtocol } from './sessions.js'
import { acceptStream, type StreamEncoder, type StreamSession } from './http-stream.js'
import { refuseUnauthenticated } from './auth.js'
import { errorBody } from '../core/errors.js'

/**
 * One WebSocket endpoint of a protocol. Every door is declared through this,
 * so each gets the same preamble in the same order: a plain HTTP request is
 * answered 426, the Origin is checked, the token (where the protocol carries
 * one at the upgrade) is required in auth mode, the protocol's own checks run,
 * then a connection slot is taken (total and per client key, cluster-wide with
 * Redis), the backend's connect hook is asked (PROXY_CONNECT_URL, when set),
 * and the socket becomes a session of the engine.
 */
export interface UpgradeRoute<R extends RouteGenericInterface = RouteGenericInterface> {
  url: string
  protocol: SessionProtocol
  /**
   * Where the client proves who it is: `upgrade` (a bearer token in the
   * Authorization header or `?token=`, required in auth mode, 401 before the
   * upgrade), `in-band` (the protocol's own frames, within AUTH_TIMEOUT_MS),
   * `none` (the protocol has credentials of its own, e.g. Pusher app keys).
   */
  token: 'upgrade' | 'in-band' | 'none'
  /** What a plain HTTP request to the endpoint is told (426 Upgrade Required). */
  usage: string
  schema?: FastifySchema
  /** The protocol's checks of the request (a name, access), after the origin and token: reply to refuse. */
  check?: preHandlerAsyncHookHandler
  /**
   * Refusals the protocol can only say over the socket (Pusher: an unknown app
   * key, a missing protocol version): return false after closing it, and no
   * session is created.
   */
  admit?: (socket: WebSocket, request: FastifyRequest<R>) => boolean
  /** The session's client id, when the protocol names it (a token's `sub` always wins). */
  clientId?: (request: FastifyRequest<R>) => string | undefined
  /** The session is accepted: attach the protocol's state; none of its frames is handled before this returns. */
  accepted: (session: Session, request: FastifyRequest<R>) => void
  /**
   * Answer `?probe=1` (the route's query schema must allow it): after the
   * whole preamble (origin, token, the protocol's checks, a slot), the
   * upgrade completes and the server closes it at once with 1000 `probe`. No
   * session is made and the backend's connect hook is not asked, so a client
   * on a fallback transport can learn that its WebSocket path works again
   * without a second session's side effects (an inbox drained into a socket
   * it is about to close).
   */
  probe?: boolean
}

/** The close reason a probe upgrade ends with. */
export const PROBE_CLOSE_REASON = 'probe'

/**
 * One HTTP streaming endpoint of a protocol (SSE, NDJSON): a GET answered by
 * a response held open as a session. It passes the same preamble as an
 * upgrade (origin, token from the header or `?token=`, the protocol's checks,
 * a connection slot), in the same order, from the same code.
 */
export interface StreamRoute<R extends RouteGenericInterface = RouteGenericInterface> {
  url: string
  protocol: SessionProtocol
  schema?: FastifySchema
  /** The protocol's checks of the request (its query, access), after the origin and token: reply to refuse. */
  check?: preHandlerAsyncHookHandler
  /** The session's encoder (its format, and any per-session state it keeps). */
  encoder: (request: FastifyRequest<R>) => StreamEncoder
  /** More response headers. */
  headers?: Record<string, string>
  /** The session is accepted: attach the protocol's state before its hello. */
  accepted: (session: StreamSession, request: FastifyRequest<R>) => void
}

/** What the upgrade was refused for, as the rejection metric labels it. */
function rejectionReason (status: number, shuttingDown: boolean): string {
  switch (status) {
    case 400: return 'invalid'
    case 401: return 'auth'
    case 403: return 'origin'
    case 429: return 'client'
    case 503: return shuttingDown ? 'shutdown' : 'total'
    default: return String(status)
  }
}

export type DeclareUpgradeRoute = <R extends RouteGenericInterface = RouteGenericInterface>(this: FastifyInstance, route: UpgradeRoute<R>) => void
export type DeclareStreamRoute = <R extends RouteGenericInterface = RouteGenericInterface>(this: FastifyInstance, route: StreamRoute<R>) => void

declare module 'fastify' {
  interface FastifyInstance {
    /** Declares a WebSocket endpoint of a protocol on this instance (every door's upgrade preamble, in one place). */
    upgradeRoute: DeclareUpgradeRoute
    /** Declares an HTTP streaming endpoint of a protocol (SSE, NDJSON), with the upgrade's preamble. */
    streamRoute: DeclareStreamRoute
  }
}

/** The upgrade preamble every door shares (see UpgradeRoute). */
export default fp(async function upgradeRoutes (app) {
  const metrics = app.metrics
  const hooks = app.proxy
  /** Upgrades and streams the connect hook refused (the rejection metric's reason `proxy`). */
  const refusedByHook = new WeakSet<FastifyRequest>()
  /**
   * Every door's checks, in order: origin and token (preValidation), then the
   * protocol's, then a connection slot, then the backend's connect hook
   * (preHandler). `own`: the client id a protocol names itself.
   */
  const preamble = (token: boolean, check: preHandlerAsyncHookHandler | undefined, protocol: SessionProtocol, own?: (request: FastifyRequest) => string | undefined, beforeSlot?: preHandlerAsyncHookHandler, isProbe?: (request: FastifyRequest) => boolean) => {
    const requireToken = token && app.auth.enabled
    // last: a refused, over-limit or unauthenticated request never reaches the backend
    const connectHook: preHandlerAsyncHookHandler | undefined = hooks.has('connect')
      ? async function connectHook (request: FastifyRequest, reply: FastifyReply) {
        // a probe becomes no session: the backend has nothing to admit
        if (isProbe?.(request) === true) return
        // a protocol that names its sessions itself (Pusher's socket ids) keeps its name: the backend may not rename it
        const named = own?.(request)
        const clientId = requestedClientId(request, named) ?? anonymousClientId()
        // marked before: the refusal's response may be finished (onResponse) before the hook returns
        refusedByHook.add(request)
        if (await hooks.connect(request, reply, { clientId, connectionId: randomUUID(), protocol: protocol.name }, named === undefined)) return reply
        refusedByHook.delete(request)
      }
      : undefined
    return {
      preValidation: [
        app.checkUpgradeOrigin,
        async (request: FastifyRequest, reply: FastifyReply) => {
          if (requireToken && request.principal === null) return refuseUnauthenticated(request, reply)
        }
      ],
      // the slot after the protocol's checks, so a refused request never holds one
      preHandler: [...(check === undefined ? [] : [check]), ...(beforeSlot === undefined ? [] : [beforeSlot]), app.acquireConnectionSlot, ...(connectHook === undefined ? [] : [connectHook])]
    }
  }
  const rejected = (request: FastifyRequest, reply: FastifyReply) => {
    metrics.connectionRejections.inc({ reason: refusedByHook.has(request) ? 'proxy' : rejectionReason(reply.statusCode, app.statusReport.shuttingDown) })
  }

  const declare: DeclareUpgradeRoute = function (this: FastifyInstance, route) {
    const upgradeRequired = errorBody(426, 'upgrade_required', route.usage)
    const isProbe = route.probe === true ? (request: FastifyRequest) => (request.query as { probe?: unknown } | undefined)?.probe === '1' : undefined
    this.get<RouteGenericInterface>(route.url, {
      websocket: true,
      config: { tokenInQuery: route.token === 'upgrade' },
      schema: route.schema,
      onRequest: async (request: FastifyRequest, reply: FastifyReply) => {
        if (!request.ws) return reply.code(426).header('upgrade', 'websocket').send(upgradeRequired)
        metrics.connectionAttempts.inc()
      },
      onResponse: async (request: FastifyRequest, reply: FastifyReply) => {
        // only refused upgrades get here: an accepted one is hijacked
        if (request.ws && reply.statusCode >= 400) rejected(request, reply)
      },
      ...preamble(route.token === 'upgrade', route.check, route.protocol, route.clientId as ((request: FastifyRequest) => string | undefined) | undefined, undefined, isProbe)
    }, (socket, request) => {
      if (isProbe?.(request) === true) return socket.close(1000, PROBE_CLOSE_REASON)
      const typed = request as FastifyRequest<any>
      if (route.admit !== undefined && !route.admit(socket, typed)) return
      // every door's binary frames arrive as Buffers (ws's default, said once here)
      socket.binaryType = 'nodebuffer'
      const grant = hooks.grantOf(request)
      const session = app.sessions.accept(socket, request, { protocol: route.protocol, clientId: grant?.clientId ?? route.clientId?.(typed), connectionId: grant?.connectionId })
      hooks.attach(session, grant)
      route.accepted(session, typed)
    })
  }

  const declareStream: DeclareStreamRoute = function (this: FastifyInstance, route) {
    /**
     * A stream opened while the server shuts down (a client's reconnect, often
     * an EventSource's own) is answered as one that was open: 200, the
     * `server_shutdown` event in its format (with the position the client sent,
     * and `retry`), then the end. A 503 would be final for an EventSource: it
     * never reconnects after an error status.
     */
    const closing = async (request: FastifyRequest, reply: FastifyReply) => {
      const notice = app.shutdownNotice()
      if (notice === null) return
      metrics.connectionRejections.inc({ reason: 'shutdown' })
      const encoder = route.encoder(request as FastifyRequest<any>)
      const body = encoder.encode(textFrame(JSON.stringify({ type: 'server_shutdown', ...notice }))) ?? ''
      reply.code(200)
        .header('content-type', encoder.contentType)
        .header('cache-control', 'no-cache, no-transform')
      // HTTP/2 has no Connection header (the stream ends; the session's GOAWAY comes with the shutdown)
      if (request.raw.httpVersionMajor < 2) reply.header('connection', 'close')
      return reply.send(body)
    }
    this.get<RouteGenericInterface>(route.url, {
      // a stream has no head to give
      exposeHeadRoute: false,
      // answered while closing: by `closing`, after the protocol's checks (origin, token, query) and before a slot
      config: { tokenInQuery: true, answersWhileClosing: true },
      schema: route.schema,
      onRequest: async () => { metrics.connectionAttempts.inc() },
      onResponse: async (request: FastifyRequest, reply: FastifyReply) => {
        // only refused requests get here: an accepted stream is hijacked
        if (reply.statusCode >= 400) rejected(request, reply)
      },
      ...preamble(true, route.check, route.protocol, undefined, closing)
    }, async (request, reply) => {
      const typed = request as FastifyRequest<any>
      const grant = hooks.grantOf(request)
      const session = acceptStream(app.sessions, request, reply, { protocol: route.protocol, encoder: route.encoder(typed), keepaliveMs: app.heartbeat.intervalMs, headers: route.headers, clientId: grant?.clientId, connectionId: grant?.connectionId })
      hooks.attach(session, grant)
      route.accepted(session, typed)
    })
  }
  app.decorate('streamRoute', declareStream)
  app.decorate('upgradeRoute', declare)
}, { name: 'upgrade-routes', fastify: '5.x', dependencies: ['sessions', 'auth', 'cors', 'limits', 'heartbeat', 'metrics', 'status', 'websocket', 'proxy', 'shutdown'] })
