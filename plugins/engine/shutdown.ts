import fp from 'fastify-plugin'
import type { Session } from './sessions.js'
import { errorBody } from '../core/errors.js'

export interface ShutdownOptions {
  /** Sent to clients as `reconnectAfterMs` in `server_shutdown` [1000]. */
  reconnectAfterMs?: number
  /** How long clients get to finish the close handshake before they are terminated [2000]. */
  closeTimeoutMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Tells every session the server is going away in its protocol's words, closes it and waits for the sockets to go. */
    disconnectAll: (reason: string) => Promise<void>
    /** What `server_shutdown` says once shutdown has begun (null before): the notice a stream opened during shutdown is answered with. */
    shutdownNotice: () => ShutdownNotice | null
  }
  interface FastifyContextConfig {
    /**
     * The route is still served while the server shuts down: liveness and
     * readiness, and the HTTP streams, which answer with the shutdown notice
     * (an EventSource refused with 503 would never reconnect).
     */
    answersWhileClosing?: boolean
  }
}

/** The body of `server_shutdown`: why, and when to come back. */
export interface ShutdownNotice { reason: string, reconnectAfterMs: number, timestamp: string }

function closed (conn: Session): Promise<void> {
  if (conn.socket.readyState === 3) return Promise.resolve()
  return new Promise(resolve => conn.socket.once('close', () => resolve()))
}

/**
 * Graceful shutdown as Fastify hooks: app.ts turns Fastify's own 503-on-closing
 * off (`return503OnClosing: false`), so the `onRequest` hook below refuses new
 * requests and upgrades with the contract's body; `preClose` tells and closes the
 * clients, then the plugins' `onClose` hooks persist and release, last-registered first.
 */
export default fp<ShutdownOptions>(async function shutdown (app, opts) {
  const reconnectAfterMs = opts.reconnectAfterMs ?? 1000
  const closeTimeoutMs = opts.closeTimeoutMs ?? 2000
  let startedAt = 0
  let notice: ShutdownNotice | null = null

  app.decorate('shutdownNotice', () => notice ?? (app.statusReport.shuttingDown ? { reason: 'server_shutdown', reconnectAfterMs, timestamp: new Date().toISOString() } : null))

  app.decorate('disconnectAll', async function disconnectAll (reason: string) {
    const conns = [...app.sessions.all()]
    const told: ShutdownNotice = { reason, reconnectAfterMs, timestamp: new Date().toISOString() }
    notice = told
    const gone = Promise.all(conns.map(closed))
    for (const conn of conns) app.sessions.goodbye(conn, told)
    let timer: NodeJS.Timeout | undefined
    const timedOut = await Promise.race([
      gone.then(() => false),
      new Promise<boolean>(resolve => { timer = setTimeout(resolve, closeTimeoutMs, true) })
    ])
    clearTimeout(timer)
    if (timedOut) {
      let terminated = 0
      for (const conn of conns) {
        if (conn.socket.readyState !== 3) {
          conn.socket.terminate()
          terminated++
        }
      }
      app.log.warn({ event: 'shutdown.step', step: 'terminate_stragglers', terminated }, 'terminated clients that did not close in time')
    }
  })

  // Once shutdown starts, new work is refused with 503 (Connection: close), upgrades included;
  // routes that say `answersWhileClosing` (liveness, readiness) stay answerable so orchestrators see the state.
  // A callback hook, not an async one: it runs for every request and almost always just passes.
  app.addHook('onRequest', function refuseWhileShuttingDown (request, reply, done) {
    if (!app.statusReport.shuttingDown) return done()
    if (request.routeOptions.config.answersWhileClosing === true) return done()
    // HTTP/2 forbids the header: its session gets a GOAWAY when the streams are closed
    if (request.raw.httpVersionMajor < 2) reply.header('connection', 'close')
    reply.code(503).send(errorBody(503, 'shutting_down', 'the server is shutting down'))
  })

  app.addHook('preClose', async () => {
    startedAt = Date.now()
    app.statusReport.beginShutdown()
    const count = app.sessions.size
    app.log.info({ event: 'shutdown.step', step: 'notify_clients', connections: count }, 'telling clients the server is shutting down')
    await app.disconnectAll('server_shutdown')
    app.log.info({ event: 'shutdown.step', step: 'clients_closed', connections: count, ms: Date.now() - startedAt }, 'clients closed')
  })

  // Registered before redis, the store and the features, so it runs after their onClose
  // hooks (last-registered first): "done" is logged once they have flushed and released.
  // Plugins registered before it (connections, metrics, tracing) still close after it.
  app.addHook('onClose', async () => {
    app.log.info({ event: 'shutdown.step', step: 'done', ms: Date.now() - startedAt }, 'shutdown complete')
  })
}, { name: 'shutdown', fastify: '5.x', dependencies: ['sessions', 'status'] })
