import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'

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
