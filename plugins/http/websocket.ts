import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import { errorBody } from '../core/errors.js'

// Re-exported so the emitted .d.ts imports @fastify/websocket: that import is what
// loads its type augmentation (`{ websocket: true }` routes, `app.websocketServer`)
// for a consumer who registers this plugin instead of @fastify/websocket itself.
export type { WebSocket, WebsocketHandler } from '@fastify/websocket'

export interface WebSocketOptions {
  /** Bytes per message; a larger frame closes the connection with 1009 [65536]. */
  maxPayload?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The WebSocket server's limits (WS_MAX_PAYLOAD), for the protocols that announce them. */
    websocketLimits: { maxPayload: number }
  }
  interface FastifyContextConfig {
    /** Set on WebSocket routes when they are declared: the only routes an upgrade request may reach. */
    acceptsUpgrade?: boolean
  }
}

/**
 * @fastify/websocket with our transport settings. Clients are told and closed
 * by the shutdown plugin's preClose, so this one's preClose only stops `ws`.
 *
 * An upgrade request that reaches a route without a WebSocket handler (or no
 * route) is refused with 404 before any upgrade: @fastify/websocket would
 * upgrade it, log its whole URL (query and token included) and close it.
 */
export default fp<WebSocketOptions>(async function websocketTransport (app, opts) {
  const maxPayload = opts.maxPayload ?? 65536
  app.decorate('websocketLimits', { maxPayload })
  await app.register(websocket, {
    options: {
      maxPayload,
      perMessageDeflate: false,
      clientTracking: false
    },
    preClose: function (done) {
      done()
    }
  })

  app.addHook('onRoute', route => {
    if (route.websocket || route.wsHandler) route.config = { ...route.config, acceptsUpgrade: true }
  })

  app.addHook('onRequest', function refuseUpgradeToHttpRoute (request, reply, done) {
    if (!request.ws || request.routeOptions.config.acceptsUpgrade === true) return done()
    reply.code(404).send(errorBody(404, 'not_found', 'no WebSocket endpoint at this path; connect to /ws'))
  })
}, { name: 'websocket', fastify: '5.x' })
