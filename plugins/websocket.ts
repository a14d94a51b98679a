import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'

// Re-exported so the emitted .d.ts imports @fastify/websocket: that import is what
// loads its type augmentation (`{ websocket: true }` routes, `app.websocketServer`)
// for a consumer who registers this plugin instead of @fastify/websocket itself.
export type { WebSocket, WebsocketHandler } from '@fastify/websocket'

export interface WebSocketOptions {
  /** Bytes per message; a larger frame closes the connection with 1009 [65536]. */
  maxPayload?: number
}

/**
 * @fastify/websocket with our transport settings. Clients are told and closed
 * by the shutdown plugin's preClose, so this one's preClose only stops `ws`.
 */
export default fp<WebSocketOptions>(async function websocketTransport (app, opts) {
  await app.register(websocket, {
    options: {
      maxPayload: opts.maxPayload ?? 65536,
      perMessageDeflate: false,
      clientTracking: false
    },
    preClose: function (done) {
      done()
    }
  })
}, { name: 'websocket', fastify: '5.x' })
