import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { createRequire } from 'node:module'
import config, { loadConfig, parseOrigins, parseTrustProxy, type Config } from './plugins/config.js'
import identity from './plugins/identity.js'
import status from './plugins/status.js'
import connections from './plugins/connections.js'
import shutdown from './plugins/shutdown.js'
import dispatcher from './plugins/dispatcher.js'
import websocket from './plugins/websocket.js'
import cors from './plugins/cors.js'
import rateLimit from './plugins/rate-limit.js'
import limits from './plugins/limits.js'
import heartbeat from './plugins/heartbeat.js'
import store, { type StoreOptions } from './plugins/store.js'
import inbox from './plugins/inbox.js'
import directMessages from './plugins/direct-messages.js'
import rooms, { type RoomsOptions } from './plugins/rooms.js'
import healthRoutes from './routes/health.js'
import wsRoute from './routes/ws.js'
import api from './routes/api/index.js'

const pkg = createRequire(import.meta.url)('../package.json') as { version: string }

export interface AppOptions {
  /** A ready configuration (tests, embedding); otherwise read from `env`. */
  config?: Config
  /** Environment to read the configuration from [process.env]. */
  env?: Record<string, string | undefined>
  /** Room tuning that has no environment variable (eviction delay, sweep interval, message persistence). */
  rooms?: Pick<RoomsOptions, 'evictAfterMs' | 'sweepIntervalMs' | 'persistMessages'>
  /** Store tuning that has no environment variable (group commit on or off, for measurements). */
  store?: Pick<StoreOptions, 'groupCommit'>
}

/** Strips `token` from a URL so a query-string token never reaches a log line. */
export function redactUrl (url: string): string {
  return url.replace(/([?&]token=)[^&]*/gi, '$1[REDACTED]')
}

/** Fastify server options derived from the configuration (logger, proxy trust, limits). */
export function serverOptions (cfg: Config): FastifyServerOptions {
  return {
    logger: {
      level: cfg.LOG_LEVEL,
      redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'token'], censor: '[REDACTED]' },
      serializers: {
        req (req: { method: string, url: string, ip?: string, socket?: { remoteAddress?: string } }) {
          return { method: req.method, url: redactUrl(req.url), remoteAddress: req.ip ?? req.socket?.remoteAddress }
        }
      }
    },
    // a hop count is valid at run time though Fastify's types omit it
    trustProxy: parseTrustProxy(cfg.TRUST_PROXY) as FastifyServerOptions['trustProxy'],
    bodyLimit: Math.max(1048576, cfg.ROOM_STATE_MAX_BYTES * 2),
    return503OnClosing: true,
    forceCloseConnections: 'idle'
  }
}

function optionsFromEnvironment (): FastifyServerOptions {
  try {
    return serverOptions(loadConfig(process.env))
  } catch {
    // the app plugin reports the configuration error when it registers
    return { logger: true }
  }
}

/** Server options for `fastify start dist/app.js`. */
export const options = optionsFromEnvironment()

export default async function app (fastify: FastifyInstance, opts: AppOptions) {
  const cfg = opts?.config ?? loadConfig(opts?.env ?? process.env)

  await fastify.register(config, { config: cfg })
  await fastify.register(identity)
  await fastify.register(status, { version: pkg.version })
  await fastify.register(connections)
  await fastify.register(shutdown, { closeTimeoutMs: Math.min(2000, Math.floor(cfg.SHUTDOWN_GRACE_MS / 2)) })
  await fastify.register(dispatcher, { messagesPerSecond: cfg.WS_MESSAGES_PER_SECOND })
  await fastify.register(websocket, { maxPayload: cfg.WS_MAX_PAYLOAD })
  await fastify.register(cors, { origins: parseOrigins(cfg.CORS_ORIGINS) })
  await fastify.register(rateLimit, { max: cfg.RATE_LIMIT_MAX, windowMs: cfg.RATE_LIMIT_WINDOW_MS })
  await fastify.register(limits, { maxConnections: cfg.MAX_CONNECTIONS, maxPerClient: cfg.MAX_CONNECTIONS_PER_CLIENT })
  await fastify.register(heartbeat, { intervalMs: cfg.HEARTBEAT_INTERVAL_MS })
  // onClose runs last-registered-first: rooms flush their writes, then the store closes
  await fastify.register(store, { dataDir: cfg.DATA_DIR, inboxMax: cfg.INBOX_MAX, inboxTtlMs: cfg.INBOX_TTL_MS, ...opts.store })
  await fastify.register(inbox, { expireIntervalMs: Math.min(cfg.INBOX_TTL_MS, 60000) })
  await fastify.register(directMessages)
  await fastify.register(rooms, {
    historySize: cfg.ROOM_HISTORY_SIZE,
    maxRoomsPerConnection: cfg.MAX_ROOMS_PER_CONNECTION,
    stateMaxBytes: cfg.ROOM_STATE_MAX_BYTES,
    ...opts.rooms
  })

  fastify.statusReport.section('connections', () => ({
    total: fastify.connections.size,
    max: fastify.limits.maxConnections,
    perClientMax: fastify.limits.maxPerClient,
    clients: fastify.connections.clientCount
  }))
  fastify.statusReport.section('redis', () => ({ enabled: false, status: 'disabled' }))
  fastify.statusReport.section('rateLimit', () => ({ max: cfg.RATE_LIMIT_MAX, windowMs: cfg.RATE_LIMIT_WINDOW_MS }))
  fastify.statusReport.section('codeExecution', () => ({ enabled: cfg.ENABLE_CODE_EXECUTION }))

  await fastify.register(healthRoutes)
  await fastify.register(wsRoute)
  await fastify.register(api, { prefix: '/api' })
  await fastify.register(api, { prefix: '/api/v1' })
}
