import fp from 'fastify-plugin'
import type { Http2Session } from 'node:http2'

/**
 * With TLS (TLS_CERT, TLS_KEY) the server speaks HTTP/2, whose sessions stay
 * open between requests, and Node's `server.close()` waits for every one of
 * them. Once the shutdown plugin has told and ended the streams and sockets
 * (its `preClose` runs first: it is registered before), each session is closed
 * with GOAWAY: a request still running finishes, no new one starts, and the
 * server can close. Without TLS no session ever opens and this does nothing.
 */
export default fp(async function http2Sessions (app) {
  const sessions = new Set<Http2Session>()
  const track = (session: Http2Session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
  }
  app.server.on('session', track)
  app.addHook('preClose', async () => {
    app.server.off('session', track)
    for (const session of sessions) session.close()
  })
}, { name: 'http2-sessions', fastify: '5.x', dependencies: ['shutdown'] })
