import type { FastifyHttpOptions, FastifyInstance, FastifyServerOptions } from 'fastify'
import type { Server } from 'node:http'
import { readFileSync, realpathSync } from 'node:fs'
import { createRequire } from 'node:module'
import { isIP } from 'node:net'
import { authAlgorithms, config, proxySecret, webhookEvents, ConfigError, errors, exitOnConfigError, identity, loadConfig, metrics, parseOrigins, parseTrustProxy, redis, redisClusterNodes, redisSentinels, status, type Config } from './plugins/core/index.js'
import {
  ADMIN_READONLY_ROLE, ADMIN_ROLE, auth, heartbeat, http2Sessions, jsonLimits, limits, messageRate, pendingConnections, proxy, reachability, sessions, shutdown, tokenRequired, trustedPeerOf, upgradeRoutes, parsePublicKey, type AuthOptions, type ProxyOptions, type StaticToken
} from './plugins/engine/index.js'
import { dispatcher, nativeBackend } from './plugins/native/index.js'
import httpStreams from './plugins/sse/index.js'
import store, { StoreOpenError, type StoreOptions } from './plugins/store/index.js'
import cluster, { RedisClientSlots } from './plugins/cluster/index.js'
import messages from './plugins/messages/index.js'
import rooms, { type RoomsOptions } from './plugins/rooms/index.js'
import codeExecution from './plugins/exec/index.js'
import {
  clientErrorHandler, EventLogController, listeningEvent, redactUrl, requestLog, tracing, type TracingOptions
} from './plugins/observability/index.js'
import { cors, openapi, pages, rateLimit, websocket } from './plugins/http/index.js'
import pusher from './plugins/pusher/index.js'
import admin from './plugins/admin/index.js'
import healthRoutes from './routes/health.js'
import metricsRoute from './routes/metrics.js'
import wsRoute from './routes/ws.js'
import sseRoutes from './routes/sse.js'
import asyncApiRoute from './routes/asyncapi.js'
import api from './routes/api/index.js'
import yjs from './plugins/yjs/index.js'

const pkg = createRequire(import.meta.url)('../package.json') as { version: string }

// The emitted app.d.ts imports @fastify/websocket through this: that import carries its type
// augmentation (`{ websocket: true }` routes) to a consumer that registers only this plugin.
export type { WebSocket, WebsocketHandler } from './plugins/http/index.js'

export interface AppOptions {
  /** A ready configuration (tests, embedding); otherwise read from `env`. */
  config?: Config
  /** Environment to read the configuration from [process.env]. */
  env?: Record<string, string | undefined>
  /** Room tuning that has no environment variable (eviction delay, sweep interval, message persistence; webhooks with their retry base and outbox staleness). */
  rooms?: Pick<RoomsOptions, 'evictAfterMs' | 'sweepIntervalMs' | 'persistMessages' | 'webhooks'>
  /** Store tuning that has no environment variable (group commit on or off, for measurements). */
  store?: Pick<StoreOptions, 'groupCommit' | 'probeIntervalMs'>
  /** Tracing options over those read from the environment (a `tracerProvider` for tests). */
  tracing?: TracingOptions
}

/** Tracing is on when an OTLP endpoint is configured, or OTEL_TRACES_ENABLED=true; OTEL_SDK_DISABLED=true wins. */
export function tracingEnabled (env: Record<string, string | undefined>): boolean {
  if (env.OTEL_SDK_DISABLED === 'true') return false
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) || env.OTEL_TRACES_ENABLED === 'true'
}

export { redactUrl }

/**
 * TRUST_PROXY as Fastify takes it. Fastify 5 ignores a bare hop count (it
 * cannot tell a proxy from a client), so a count becomes "trust the nearest n
 * hops", the Express meaning: only safe when nothing but the proxy can reach
 * the port (docs/security.md). Addresses/CIDRs are checked against the peer.
 */
export function trustProxyOption (value: string): FastifyServerOptions['trustProxy'] {
  const parsed = parseTrustProxy(value)
  if (typeof parsed === 'number') return (_address: string, hop: number) => hop < parsed
  return parsed
}

/** The certificate and key of TLS_CERT and TLS_KEY, read now; an unreadable file is a ConfigError naming its variable. */
export function tlsFiles (cfg: Pick<Config, 'TLS_CERT' | 'TLS_KEY'>): { cert: Buffer, key: Buffer } | undefined {
  if (cfg.TLS_CERT === undefined || cfg.TLS_KEY === undefined) return undefined
  const read = (name: 'TLS_CERT' | 'TLS_KEY', file: string): Buffer => {
    try {
      return readFileSync(file)
    } catch (err) {
      throw new ConfigError(`Invalid configuration: ${name} must be a readable PEM file (${(err as NodeJS.ErrnoException).code ?? 'unreadable'}: ${file})`)
    }
  }
  return { cert: read('TLS_CERT', cfg.TLS_CERT), key: read('TLS_KEY', cfg.TLS_KEY) }
}

/**
 * Fastify server options derived from the configuration (logger, proxy trust,
 * limits). With TLS_CERT and TLS_KEY the server is HTTPS with HTTP/2 and
 * HTTP/1.1 on one port (ALPN; WebSocket upgrades are HTTP/1.1). The instance
 * stays typed as HTTP/1's: the code that touches raw requests and responses
 * (plugins/engine/http-stream.ts, limits.ts) handles both kinds.
 */
export function serverOptions (cfg: Config): FastifyHttpOptions<Server> {
  const tls = tlsFiles(cfg)
  const options = serverOptionsOverHttp1(cfg)
  if (tls === undefined) return options
  // http2 with allowHTTP1: browsers and h2 clients get HTTP/2, older clients and WebSocket upgrades HTTP/1.1
  return { ...options, http2: true, https: { allowHTTP1: true, cert: tls.cert, key: tls.key } } as unknown as FastifyHttpOptions<Server>
}

function serverOptionsOverHttp1 (cfg: Config): FastifyHttpOptions<Server> {
  return {
    logger: {
      level: cfg.LOG_LEVEL,
      hooks: { logMethod: listeningEvent },
      redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'token'], censor: '[REDACTED]' },
      serializers: {
        req (req: { method: string, url: string, ip?: string, socket?: { remoteAddress?: string } }) {
          return { method: req.method, url: redactUrl(req.url), remoteAddress: req.ip ?? req.socket?.remoteAddress }
        }
      }
    },
    trustProxy: trustProxyOption(cfg.TRUST_PROXY),
    bodyLimit: Math.max(1048576, cfg.ROOM_STATE_MAX_BYTES * 2),
    // find-my-way's default (100) is below a room name's 128 characters: such a room answered 414 over HTTP
    routerOptions: { maxParamLength: 512 },
    // Fastify's default requestTimeout is 0 (none): a slow-header or slow-body client could pin a socket
    requestTimeout: cfg.HTTP_REQUEST_TIMEOUT_MS,
    http: {
      headersTimeout: cfg.HTTP_HEADERS_TIMEOUT_MS,
      connectionsCheckingInterval: Math.min(5000, Math.ceil(cfg.HTTP_HEADERS_TIMEOUT_MS / 2))
    },
    // the shutdown plugin answers 503 itself, with the contract's body and a metric
    return503OnClosing: false,
    // no "incoming request"/"request completed": the request-log plugin writes one `http.request` line per response
    logController: new EventLogController(),
    clientErrorHandler,
    forceCloseConnections: 'idle'
  }
}

/** Whether this process is fastify-cli's `fastify start`: then this module is the program, not a library. */
function startedByFastifyCli (): boolean {
  try {
    return /[\\/]fastify-cli[\\/]cli\.js$/.test(realpathSync(process.argv[1] ?? ''))
  } catch {
    return false
  }
}

const fastifyCli = startedByFastifyCli()

/**
 * fastify-cli listens where -a/--address or FASTIFY_ADDRESS say, else on
 * localhost (0.0.0.0 in a container); it never reads HOST and no server option
 * changes that. Under it, an explicit HOST that the bound address does not
 * match stops the process with one line instead of serving somewhere else. The
 * check runs on the socket's own 'listening' event, ahead of Fastify's handler
 * of it, so "Server listening" is never logged for an address that is refused.
 */
function checkFastifyCliAddress (fastify: FastifyInstance, host: string): void {
  fastify.server.prependOnceListener('listening', () => {
    const address = fastify.server.address()
    const bound = typeof address === 'object' && address !== null ? address.address : String(address)
    if (isIP(host) === 0 || bound === host) return
    exitOnConfigError(new ConfigError(`Invalid configuration: HOST is ${host} but fastify-cli listens on ${bound} (it reads -a/--address or FASTIFY_ADDRESS, not HOST): run fastify start -a ${host}, as npm run start:cli does`))
  })
}

/**
 * Under fastify-cli, a refusal while the app registers (DATA_DIR held by
 * another process, a feature without its optional package) rejects fastify-cli's
 * start promise, which nothing handles: Node would print the whole stack. It is
 * the same one line as `npm start` instead; anything else is rethrown as before.
 */
function exitOnStartupRefusal (err: unknown): never {
  if (err instanceof StoreOpenError) {
    process.stderr.write(`${err.message}\n`)
    process.exit(1)
  }
  exitOnConfigError(err)
}

function optionsFromEnvironment (): FastifyHttpOptions<Server> {
  try {
    return serverOptions(loadConfig(process.env))
  } catch (err) {
    // under fastify-cli: the same one line as `npm start`, not its stack trace
    if (fastifyCli) exitOnConfigError(err)
    // embedded: the app plugin reports the configuration error when it registers
    return { logger: true }
  }
}

/** Server options for `fastify start -o dist/app.js`; under fastify-cli a bad variable exits with one line. */
export const options = optionsFromEnvironment()
// until the app is ready: afterwards close-with-grace, which fastify-cli installs, handles what is left
if (fastifyCli) process.on('unhandledRejection', exitOnStartupRefusal)

/** ADMIN_TOKEN and ADMIN_READONLY_TOKEN as the principals they stand for (plugins/admin). */
function adminTokens (cfg: Config): StaticToken[] {
  const tokens: StaticToken[] = []
  if (cfg.ADMIN_TOKEN) tokens.push({ token: cfg.ADMIN_TOKEN, principal: { sub: 'admin', role: ADMIN_ROLE } })
  if (cfg.ADMIN_READONLY_TOKEN) tokens.push({ token: cfg.ADMIN_READONLY_TOKEN, principal: { sub: 'admin-readonly', role: ADMIN_READONLY_ROLE } })
  return tokens
}

/** The auth plugin's options from the AUTH_* variables; an unreadable AUTH_PUBLIC_KEY is a ConfigError. */
function authOptions (cfg: Config, staticTokens: StaticToken[]): AuthOptions {
  const { secret, asymmetric } = authAlgorithms(cfg)
  if (cfg.AUTH_PUBLIC_KEY !== undefined) {
    try {
      parsePublicKey(cfg.AUTH_PUBLIC_KEY)
    } catch {
      throw new ConfigError('Invalid configuration: AUTH_PUBLIC_KEY must be a PEM public key ("-----BEGIN PUBLIC KEY-----" or a certificate)')
    }
  }
  const hasPublic = cfg.AUTH_JWKS_URL !== undefined || cfg.AUTH_PUBLIC_KEY !== undefined
  return {
    secret: cfg.AUTH_SECRET,
    allowSecret: secret,
    staticTokens,
    clockSkewS: cfg.AUTH_CLOCK_SKEW_S,
    publicKeys: hasPublic
      ? {
          jwksUrl: cfg.AUTH_JWKS_URL,
          publicKey: cfg.AUTH_PUBLIC_KEY,
          algorithms: asymmetric,
          issuer: cfg.AUTH_ISSUER,
          audience: cfg.AUTH_AUDIENCE?.split(',').map(s => s.trim()).filter(Boolean),
          clockSkewS: cfg.AUTH_CLOCK_SKEW_S,
          refreshMs: cfg.AUTH_JWKS_REFRESH_MS,
          cooldownMs: cfg.AUTH_JWKS_COOLDOWN_MS
        }
      : undefined
  }
}

/** The proxy plugin's options from the PROXY_* variables. */
function proxyOptions (cfg: Config): ProxyOptions {
  return {
    urls: { connect: cfg.PROXY_CONNECT_URL, join: cfg.PROXY_JOIN_URL, publish: cfg.PROXY_PUBLISH_URL, rpc: cfg.PROXY_RPC_URL },
    secret: proxySecret(cfg),
    timeoutMs: cfg.PROXY_TIMEOUT_MS,
    maxResponseBytes: cfg.PROXY_MAX_RESPONSE_BYTES,
    maxDepth: cfg.JSON_MAX_DEPTH,
    onFailure: { connect: cfg.PROXY_CONNECT_ON_FAILURE, join: cfg.PROXY_JOIN_ON_FAILURE, publish: cfg.PROXY_PUBLISH_ON_FAILURE }
  }
}

export default async function app (fastify: FastifyInstance, opts: AppOptions) {
  const env = opts?.env ?? process.env
  const cfg = opts?.config ?? loadConfig(env)

  await fastify.register(config, { config: cfg })
  if (fastifyCli) fastify.addHook('onReady', async () => { process.off('unhandledRejection', exitOnStartupRefusal) })
  if (fastifyCli && env.HOST?.trim()) checkFastifyCliAddress(fastify, cfg.HOST)
  // before every route: validation wording, the JSON body parser and error codes apply to all of them
  await fastify.register(errors)
  // first: @fastify/otel wraps the handlers of the routes registered after it
  await fastify.register(tracing, { enabled: tracingEnabled(env), serviceVersion: pkg.version, ...opts?.tracing })
  await fastify.register(identity)
  await fastify.register(requestLog)
  await fastify.register(status, { version: pkg.version })
  await fastify.register(metrics)
  await fastify.register(openapi, { version: pkg.version })
  await fastify.register(sessions, { maxBufferedBytes: cfg.WS_MAX_BUFFERED_BYTES, messagesPerSecond: cfg.WS_MESSAGES_PER_SECOND, authTimeoutMs: cfg.AUTH_TIMEOUT_MS, expiryNoticeMs: cfg.AUTH_EXPIRY_NOTICE_MS })
  // before the rate limit and the connection limits, which count by the token's sub
  await fastify.register(auth, authOptions(cfg, adminTokens(cfg)))
  await fastify.register(shutdown, { closeTimeoutMs: Math.min(2000, Math.floor(cfg.SHUTDOWN_GRACE_MS / 2)) })
  // after shutdown: its preClose ends the streams first, then the HTTP/2 sessions get GOAWAY
  await fastify.register(http2Sessions)
  await fastify.register(jsonLimits, { maxDepth: cfg.JSON_MAX_DEPTH })
  await fastify.register(websocket, { maxPayload: cfg.WS_MAX_PAYLOAD })
  await fastify.register(cors, { origins: parseOrigins(cfg.CORS_ORIGINS), publicUrl: cfg.PUBLIC_URL })
  // before the store, so it closes after it (onClose runs last-registered-first): rooms → store → redis
  await fastify.register(redis, { url: cfg.REDIS_URL, sentinel: redisSentinels(cfg), cluster: redisClusterNodes(cfg), instanceTtlMs: cfg.REDIS_INSTANCE_TTL_MS, keyPrefix: cfg.REDIS_KEY_PREFIX })
  // with REDIS_URL, MAX_CONNECTIONS_PER_CLIENT counts across instances; MAX_CONNECTIONS stays per instance
  const counter = fastify.redisLink ? new RedisClientSlots(fastify.redisLink) : undefined
  await fastify.register(limits, { maxConnections: cfg.MAX_CONNECTIONS, maxPerClient: cfg.MAX_CONNECTIONS_PER_CLIENT, counter })
  await fastify.register(pendingConnections, {
    maxTotal: cfg.MAX_PENDING_CONNECTIONS,
    maxPerClient: cfg.MAX_PENDING_CONNECTIONS_PER_CLIENT,
    timeoutMs: cfg.PENDING_HEADERS_TIMEOUT_MS,
    trustedPeer: trustedPeerOf(cfg.TRUST_PROXY)
  })
  await fastify.register(heartbeat, { intervalMs: cfg.HEARTBEAT_INTERVAL_MS })
  // the application's backend hooks (PROXY_*_URL): before the upgrade routes, which ask the connect hook
  await fastify.register(proxy, proxyOptions(cfg))
  await fastify.register(upgradeRoutes)
  // the native protocol (/ws): its dispatcher takes the handlers the features register
  await fastify.register(dispatcher, { maxDepth: cfg.JSON_MAX_DEPTH })
  // the backend hooks' native frame (rpc) and the connect hook's welcome data
  await fastify.register(nativeBackend)
  // before rooms and direct messages, which deliver through it; after redis, so it withdraws before redis quits
  await fastify.register(cluster)
  await fastify.register(reachability)
  // onClose runs last-registered-first: rooms flush their writes, then the store closes
  await fastify.register(store, { dataDir: cfg.DATA_DIR, inboxMax: cfg.INBOX_MAX, inboxTtlMs: cfg.INBOX_TTL_MS, idempotencyTtlMs: cfg.IDEMPOTENCY_TTL_MS, idempotencyMaxKeys: cfg.IDEMPOTENCY_MAX_KEYS, ...opts.store })
  await fastify.register(messages, { expireIntervalMs: Math.min(cfg.INBOX_TTL_MS, 60000) })
  await fastify.register(rooms, {
    historySize: cfg.ROOM_HISTORY_SIZE,
    maxRoomsPerConnection: cfg.MAX_ROOMS_PER_CONNECTION,
    stateMaxBytes: cfg.ROOM_STATE_MAX_BYTES,
    webhooks: cfg.WEBHOOK_URL === undefined ? undefined : { url: cfg.WEBHOOK_URL, secret: cfg.WEBHOOK_SECRET ?? '', events: webhookEvents(cfg), batchMs: cfg.WEBHOOK_BATCH_MS },
    ...opts.rooms
  })
  // after rooms: exec results are broadcast to room members
  await fastify.register(codeExecution, {
    enabled: cfg.ENABLE_CODE_EXECUTION,
    timeoutMs: cfg.EXEC_TIMEOUT_MS,
    memoryMb: cfg.EXEC_MEMORY_MB
  })
  await fastify.register(messageRate)
  // SSE and HTTP streaming (/sse, /stream): sessions of the engine that join rooms and get direct messages as /ws does
  await fastify.register(httpStreams)
  // the operator's views and actions; its routes exist when an admin token is configured or auth mode is on
  await fastify.register(admin, { enabled: cfg.ADMIN_TOKEN !== undefined || cfg.ADMIN_READONLY_TOKEN !== undefined || fastify.auth.enabled })
  // the Pusher Channels protocol: outside the token-protected context (apps authenticate by key and signatures), with /ws's Origin check and connection limits
  await fastify.register(pusher)

  // collaborative Yjs documents (y-websocket at /yjs/*, Hocuspocus at /collab); their HTTP routes are the API's
  await fastify.register(yjs)

  await fastify.register(healthRoutes)
  await fastify.register(metricsRoute)
  await fastify.register(asyncApiRoute, { version: pkg.version })
  // Access is a property of where a route is registered, never of its URL's text:
  // every route in here needs a token in auth mode, and those of the HTTP API
  // share one rate limit, whatever spelling of the path the router accepts.
  await fastify.register(async function protectedRoutes (scope) {
    await scope.register(tokenRequired)
    await scope.register(wsRoute)
    await scope.register(async function httpApi (apiScope) {
      await apiScope.register(rateLimit, { max: cfg.RATE_LIMIT_MAX, windowMs: cfg.RATE_LIMIT_WINDOW_MS, redis: fastify.redisLink?.commands, sharedReady: () => fastify.redisLink?.ready ?? true, keyPrefix: `${cfg.REDIS_KEY_PREFIX}rl:` })
      // the streams (/sse, /stream) are plain HTTP requests: each open counts against the same budget (a reconnect loop included)
      await apiScope.register(sseRoutes)
      await apiScope.register(api, { prefix: '/api', aliasOf: '/api/v1' })
      await apiScope.register(api, { prefix: '/api/v1' })
    })
  })
  await fastify.register(pages, {})
}
