import fp from 'fastify-plugin'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { webhookKey } from './webhook-signature.js'

const Int = (min: number, def: number, max = Number.MAX_SAFE_INTEGER) =>
  Type.Integer({ minimum: min, maximum: max, default: def })
const Bool = (def: boolean) => Type.Boolean({ default: def })
const Policy = () => Type.Union([Type.Literal('deny'), Type.Literal('allow')], { default: 'deny' })

/**
 * Every environment variable of the wire contract, with its default.
 * Keys keep the environment's spelling so an operator can grep for them.
 */
export const ConfigSchema = Type.Object({
  PORT: Int(0, 5001, 65535),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  /** The origin the server serves its own pages from; unset = derived from the listen address. */
  PUBLIC_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** A PEM certificate file (its chain after it): with TLS_KEY, the server speaks HTTPS, HTTP/2 and HTTP/1.1 on its port. */
  TLS_CERT: Type.Optional(Type.String({ minLength: 1 })),
  /** The PEM private key file of TLS_CERT. */
  TLS_KEY: Type.Optional(Type.String({ minLength: 1 })),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info' }),
  MAX_CONNECTIONS: Int(1, 1000),
  MAX_CONNECTIONS_PER_CLIENT: Int(1, 10),
  CORS_ORIGINS: Type.String({ default: 'http://localhost:3000,http://localhost:5000,http://127.0.0.1:3000,http://127.0.0.1:5000' }),
  RATE_LIMIT_MAX: Int(1, 60),
  RATE_LIMIT_WINDOW_MS: Int(1, 60000),
  WS_MAX_PAYLOAD: Int(64, 65536),
  WS_MESSAGES_PER_SECOND: Int(1, 50),
  /** Send buffer a connection may hold before it is closed as a slow consumer (1013). */
  WS_MAX_BUFFERED_BYTES: Int(1024, 1048576),
  /** Node's headersTimeout and requestTimeout: a client slower than this cannot pin a socket. */
  HTTP_HEADERS_TIMEOUT_MS: Int(100, 10000),
  HTTP_REQUEST_TIMEOUT_MS: Int(100, 30000),
  /** Connections that have not finished their first request's headers, in all; past it the oldest is closed. */
  MAX_PENDING_CONNECTIONS: Int(1, 512),
  /** Such connections per client address; more are closed at once. */
  MAX_PENDING_CONNECTIONS_PER_CLIENT: Int(1, 64),
  /** Time a new connection has to finish its first request's headers. */
  PENDING_HEADERS_TIMEOUT_MS: Int(100, 3000),
  HEARTBEAT_INTERVAL_MS: Int(10, 30000),
  SHUTDOWN_GRACE_MS: Int(100, 10000),
  DATA_DIR: Type.String({ minLength: 1, default: './data' }),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  /** Comma list of Sentinel host:port: Redis is the master they name REDIS_SENTINEL_NAME (REDIS_URL then gives only credentials, db and TLS). */
  REDIS_SENTINELS: Type.Optional(Type.String({ minLength: 1 })),
  /** Comma list of host:port of Redis Cluster nodes (any few; the rest are discovered): keys hash-tagged per room, sharded pub/sub. REDIS_URL then gives only credentials and TLS. */
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({ minLength: 1 })),
  /** The master group name the Sentinels monitor (`sentinel monitor <name> …`). */
  REDIS_SENTINEL_NAME: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_.-]+$', description: '1 to 128 of A-Z a-z 0-9 _ . -' })),
  /** How long a silent instance still counts (its connection slots, its presence) [15000]. */
  REDIS_INSTANCE_TTL_MS: Int(100, 15000),
  /** What every Redis key and channel of this deployment starts with: deployments with different prefixes share one Redis without seeing each other. */
  REDIS_KEY_PREFIX: Type.String({ minLength: 1, maxLength: 32, pattern: '^[A-Za-z0-9_.:-]+$', default: 'sb:', description: '1 to 32 of A-Z a-z 0-9 _ . : - (no braces: a hash tag would put every key on one cluster slot)' }),
  ROOM_HISTORY_SIZE: Int(0, 100),
  MAX_ROOMS_PER_CONNECTION: Int(1, 50),
  ROOM_STATE_MAX_BYTES: Int(2, 262144),
  /** Deepest nesting of any JSON value in a frame or body (a patch, publish data); checked without recursion. */
  JSON_MAX_DEPTH: Int(1, 64, 1000),
  INBOX_MAX: Int(0, 100),
  INBOX_TTL_MS: Int(1, 86400000),
  /** How long a write's idempotency key is remembered. */
  IDEMPOTENCY_TTL_MS: Int(1, 600000),
  /** Idempotency keys remembered per client id (per client key over HTTP); the oldest go first. */
  IDEMPOTENCY_MAX_KEYS: Int(1, 1000, 100000),
  AUTH_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  /** A JSON Web Key Set (an OIDC provider's jwks_uri): asymmetric tokens (RS*, PS*, ES*, EdDSA) are verified with its keys. */
  AUTH_JWKS_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** One PEM public key (SPKI "BEGIN PUBLIC KEY" or a certificate) for asymmetric tokens; `\n` escapes are read as newlines. */
  AUTH_PUBLIC_KEY: Type.Optional(Type.String({ minLength: 1 })),
  /** Comma list of accepted token algorithms; default: HS256 with AUTH_SECRET, and every asymmetric one with a public key source. */
  AUTH_ALGORITHMS: Type.Optional(Type.String({ minLength: 1 })),
  /** The `iss` asymmetric tokens must carry. */
  AUTH_ISSUER: Type.Optional(Type.String({ minLength: 1 })),
  /** Comma list: an asymmetric token's `aud` must include one of them. */
  AUTH_AUDIENCE: Type.Optional(Type.String({ minLength: 1 })),
  /** Seconds of tolerance on exp and nbf (clocks of the issuer and this server differ). */
  AUTH_CLOCK_SKEW_S: Int(0, 0, 300),
  /** How often the JWKS is fetched again (a failure keeps the keys held). */
  AUTH_JWKS_REFRESH_MS: Int(1000, 600000),
  /** At most one JWKS fetch caused by tokens (an unknown kid) per this long, whatever its outcome. */
  AUTH_JWKS_COOLDOWN_MS: Int(0, 30000),
  /** How long before a connection's token expires it is told so (native `token_expiring`), to refresh it; half the token's remaining life when that is shorter. */
  AUTH_EXPIRY_NOTICE_MS: Int(0, 60000),
  /** How long a connection of a protocol that authenticates in its own frames (Hocuspocus) has to do so before it is closed. */
  AUTH_TIMEOUT_MS: Int(100, 10000),
  /** Bearer secret of the operator's API (`/api/admin/*`, the page at /admin); unset, with no auth mode, = those routes answer 404. */
  ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 16 })),
  /** Bearer secret that may read every admin route and act on none. */
  ADMIN_READONLY_TOKEN: Type.Optional(Type.String({ minLength: 16 })),
  /** Native room webhooks (room_occupied, room_vacated, member_joined, member_left, message_published), signed as Standard Webhooks. */
  WEBHOOK_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** The Standard Webhooks secret: whsec_ and base64 of 24 to 64 random bytes; required with WEBHOOK_URL. */
  WEBHOOK_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  /** Comma list of the events sent [room_occupied,room_vacated,member_joined,member_left]; add message_published for every room message. */
  WEBHOOK_EVENTS: Type.String({ minLength: 1, default: 'room_occupied,room_vacated,member_joined,member_left' }),
  /** Events gathered this long go out as one request. */
  WEBHOOK_BATCH_MS: Int(0, 250, 60000),
  // Proxy hooks (plugins/engine/proxy.ts, docs/integration.md): the application's backend decides
  /** Asked at every upgrade: allow (optionally naming the client id, rooms to join, welcome `data`) or refuse (403). */
  PROXY_CONNECT_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** Asked at every join: allow (optionally with `data` for `joined`) or refuse (`forbidden`). */
  PROXY_JOIN_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** Asked before every publish is stored: allow, refuse, or rewrite `data`. */
  PROXY_PUBLISH_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** Answers the native `rpc` frame. */
  PROXY_RPC_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** Per backend request, the answer included. */
  PROXY_TIMEOUT_MS: Int(1, 3000, 60000),
  /** Standard Webhooks secret signing every hook request (whsec_ and base64 of 24 to 64 bytes); WEBHOOK_SECRET when unset. */
  PROXY_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  /** Largest backend answer in bytes; bigger counts as a failure. */
  PROXY_MAX_RESPONSE_BYTES: Int(64, 65536, 16777216),
  /** What a failed hook (down, timeout, bad answer) decides: deny or allow. */
  PROXY_CONNECT_ON_FAILURE: Policy(),
  PROXY_JOIN_ON_FAILURE: Policy(),
  PROXY_PUBLISH_ON_FAILURE: Policy(),
  TRUST_PROXY: Type.String({ default: 'false' }),
  ENABLE_CODE_EXECUTION: Bool(false),
  EXEC_TIMEOUT_MS: Int(10, 1000),
  EXEC_MEMORY_MB: Int(1, 32, 4096),
  // --- Pusher Channels protocol (plugins/pusher): one app from these three, or several from PUSHER_APPS_FILE ---
  PUSHER_APP_ID: Type.Optional(Type.String({ minLength: 1 })),
  PUSHER_APP_KEY: Type.Optional(Type.String({ minLength: 1 })),
  PUSHER_APP_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  /** Webhook URL of the single PUSHER_APP_* app. */
  PUSHER_WEBHOOK_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** Bridge of the single PUSHER_APP_* app: Pusher channel <c> is native room <prefix><c> (docs/pusher.md). */
  PUSHER_BRIDGE_ROOM_PREFIX: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' })),
  /** Bridge private- and presence- channels too (the native token's rooms claim then authorizes them). */
  PUSHER_BRIDGE_PRIVATE: Bool(false),
  /** A JSON file listing apps, each with its own limits and webhooks (docs/pusher.md). */
  PUSHER_APPS_FILE: Type.Optional(Type.String({ minLength: 1 })),
  /** Seconds of silence before the server pings a Pusher client (told to it in connection_established). */
  PUSHER_ACTIVITY_TIMEOUT_S: Int(1, 120, 120),
  // Collaborative Yjs documents (plugins/yjs, docs/collab.md)
  /** Bytes of one Yjs update (a provider's whole offline work arrives as one); WS_MAX_PAYLOAD bounds it too. */
  YJS_MAX_UPDATE_BYTES: Int(64, 65536),
  /** Bytes a document may take in the store (snapshot plus updates not yet compacted). */
  YJS_MAX_DOCUMENT_BYTES: Int(1024, 4194304),
  /** Documents one Hocuspocus connection may have open at once. */
  YJS_MAX_DOCUMENTS_PER_CONNECTION: Int(1, 20),
  /** Updates per second per connection (burst: twice as many). */
  YJS_UPDATES_PER_SECOND: Int(1, 100),
  /** How long a document stays in memory after its last connection leaves. */
  YJS_UNLOAD_AFTER_MS: Int(0, 5000),
  /** Updates after which a document is re-encoded into its snapshot. */
  YJS_COMPACT_AFTER_UPDATES: Int(1, 200)
})

export type Config = Static<typeof ConfigSchema>
export type TrustProxy = boolean | number | string[]

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

/** A configuration error: its message is the one line an operator sees. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** For the entry points (server.ts, fastify-cli): a ConfigError becomes its one line on stderr and exit code 1; anything else is rethrown. */
export function exitOnConfigError (err: unknown): never {
  if (!(err instanceof ConfigError)) throw err
  process.stderr.write(`${err.message}\n`)
  process.exit(1)
}

/**
 * Imports an optional dependency of a feature that is switched on. When the
 * package is not installed (`npm install --omit=optional`), fails with a
 * ConfigError naming the setting that turned it on and the package to install.
 */
export async function importOptional<T> (pkg: string, setting: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load()
  } catch (err) {
    const code = (err as { code?: string }).code
    if ((code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && String((err as Error).message).includes(pkg)) {
      throw new ConfigError(`Invalid configuration: ${setting} needs the optional package ${pkg}, which is not installed (npm install ${pkg})`)
    }
    throw err
  }
}

function describe (schema: TSchema): string {
  if (schema.type === 'integer') {
    const max = schema.maximum === Number.MAX_SAFE_INTEGER ? '' : ` and <= ${schema.maximum}`
    return `an integer >= ${schema.minimum}${max}`
  }
  if (schema.type === 'boolean') return 'true or false'
  if (schema.anyOf) return `one of ${schema.anyOf.map((s: TSchema) => s.const).join(', ')}`
  if (schema.pattern === '^rediss?://') return 'a redis:// or rediss:// URL'
  if (schema.pattern === '^https?://') return 'an http:// or https:// URL'
  if (typeof schema.description === 'string') return schema.description
  return 'a non-empty string'
}

/**
 * Reads the contract's variables from an environment object.
 * Unknown variables are ignored; empty strings count as unset.
 */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    const value = env[key]
    if (value !== undefined && value !== '') raw[key] = value.trim()
  }
  if (raw.SHUTDOWN_GRACE_MS === undefined && env.FASTIFY_CLOSE_GRACE_DELAY) {
    raw.SHUTDOWN_GRACE_MS = env.FASTIFY_CLOSE_GRACE_DELAY.trim()
  }
  const properties = ConfigSchema.properties as Record<string, TSchema>
  const fail = (key: string): never => {
    const got = raw[key] === undefined ? 'nothing' : JSON.stringify(raw[key])
    throw new ConfigError(`Invalid configuration: ${key} must be ${properties[key] ? describe(properties[key]) : 'valid'} (got ${got})`)
  }
  // Convert would truncate "1.5" to 1: integers must be written as integers.
  for (const [key, value] of Object.entries(raw)) {
    if (properties[key].type === 'integer' && !/^-?\d+$/.test(String(value))) fail(key)
  }
  const converted = Value.Convert(ConfigSchema, Value.Default(ConfigSchema, structuredClone(raw)))
  const error = Value.Errors(ConfigSchema, converted).First()
  if (error) fail(error.path.replace(/^\//, ''))
  const config = converted as Config
  parseTrustProxy(config.TRUST_PROXY)
  authAlgorithms(config)
  webhookEvents(config)
  proxySecret(config)
  redisSentinels(config)
  redisClusterNodes(config)
  if (config.PUBLIC_URL !== undefined && !URL.canParse(config.PUBLIC_URL)) fail('PUBLIC_URL')
  if ((config.TLS_CERT === undefined) !== (config.TLS_KEY === undefined)) {
    throw new ConfigError(`Invalid configuration: set both TLS_CERT and TLS_KEY, or neither (got only ${config.TLS_CERT === undefined ? 'TLS_KEY' : 'TLS_CERT'})`)
  }
  if (config.HTTP_HEADERS_TIMEOUT_MS > config.HTTP_REQUEST_TIMEOUT_MS) {
    throw new ConfigError(`Invalid configuration: HTTP_HEADERS_TIMEOUT_MS must be <= HTTP_REQUEST_TIMEOUT_MS (got ${config.HTTP_HEADERS_TIMEOUT_MS} > ${config.HTTP_REQUEST_TIMEOUT_MS})`)
  }
  return config
}

/** A comma list of host:port (REDIS_SENTINELS); throws a ConfigError naming `setting`. */
export function parseHostPorts (value: string, setting: string): Array<{ host: string, port: number }> {
  return value.split(',').map(s => s.trim()).filter(Boolean).map(entry => {
    const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/.exec(entry)
    const port = m ? Number(m[2]) : 0
    if (!m || port < 1 || port > 65535) throw new ConfigError(`Invalid configuration: ${setting} must be a comma list of host:port (got ${JSON.stringify(entry)})`)
    return { host: m[1].replace(/^\[|\]$/g, ''), port }
  })
}

/** The Redis Cluster seed nodes, or undefined without REDIS_CLUSTER_NODES; throws a ConfigError naming the setting. */
export function redisClusterNodes (config: Pick<Config, 'REDIS_CLUSTER_NODES' | 'REDIS_SENTINELS'>): Array<{ host: string, port: number }> | undefined {
  if (config.REDIS_CLUSTER_NODES === undefined) return undefined
  if (config.REDIS_SENTINELS !== undefined) throw new ConfigError('Invalid configuration: set REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both (a Redis Cluster fails over by itself)')
  const nodes = parseHostPorts(config.REDIS_CLUSTER_NODES, 'REDIS_CLUSTER_NODES')
  if (nodes.length === 0) throw new ConfigError('Invalid configuration: REDIS_CLUSTER_NODES must be a comma list of host:port (got none)')
  return nodes
}

/** The Sentinels and the master name, or undefined without REDIS_SENTINELS; throws a ConfigError naming the setting. */
export function redisSentinels (config: Pick<Config, 'REDIS_SENTINELS' | 'REDIS_SENTINEL_NAME'>): { sentinels: Array<{ host: string, port: number }>, name: string } | undefined {
  if (config.REDIS_SENTINELS === undefined) {
    if (config.REDIS_SENTINEL_NAME !== undefined) throw new ConfigError('Invalid configuration: REDIS_SENTINEL_NAME needs REDIS_SENTINELS (the Sentinels to ask for that master)')
    return undefined
  }
  const sentinels = parseHostPorts(config.REDIS_SENTINELS, 'REDIS_SENTINELS')
  if (sentinels.length === 0) throw new ConfigError('Invalid configuration: REDIS_SENTINELS must be a comma list of host:port (got none)')
  if (config.REDIS_SENTINEL_NAME === undefined) throw new ConfigError('Invalid configuration: REDIS_SENTINELS needs REDIS_SENTINEL_NAME, the master group name the Sentinels monitor')
  return { sentinels, name: config.REDIS_SENTINEL_NAME }
}

/** The algorithms a token may be signed with, from AUTH_ALGORITHMS or the key sources configured; throws a ConfigError naming the setting. */
export function authAlgorithms (config: Pick<Config, 'AUTH_SECRET' | 'AUTH_JWKS_URL' | 'AUTH_PUBLIC_KEY' | 'AUTH_ALGORITHMS'>): { secret: boolean, asymmetric: string[] } {
  const hasPublic = config.AUTH_JWKS_URL !== undefined || config.AUTH_PUBLIC_KEY !== undefined
  if (config.AUTH_JWKS_URL !== undefined && config.AUTH_PUBLIC_KEY !== undefined) {
    throw new ConfigError('Invalid configuration: set one of AUTH_JWKS_URL and AUTH_PUBLIC_KEY, not both')
  }
  if (config.AUTH_JWKS_URL !== undefined && !URL.canParse(config.AUTH_JWKS_URL)) {
    throw new ConfigError(`Invalid configuration: AUTH_JWKS_URL must be an http:// or https:// URL (got ${JSON.stringify(config.AUTH_JWKS_URL)})`)
  }
  if (config.AUTH_ALGORITHMS === undefined) {
    return { secret: config.AUTH_SECRET !== undefined, asymmetric: hasPublic ? [...ASYMMETRIC] : [] }
  }
  const names = config.AUTH_ALGORITHMS.split(',').map(s => s.trim()).filter(Boolean)
  for (const name of names) {
    if (name !== 'HS256' && !(ASYMMETRIC as readonly string[]).includes(name)) {
      throw new ConfigError(`Invalid configuration: AUTH_ALGORITHMS must list some of HS256, ${ASYMMETRIC.join(', ')} (got ${JSON.stringify(name)})`)
    }
  }
  const secret = names.includes('HS256')
  const asymmetric = names.filter(n => n !== 'HS256')
  if (secret && config.AUTH_SECRET === undefined) throw new ConfigError('Invalid configuration: AUTH_ALGORITHMS lists HS256, which needs AUTH_SECRET')
  if (asymmetric.length > 0 && !hasPublic) throw new ConfigError(`Invalid configuration: AUTH_ALGORITHMS lists ${asymmetric[0]}, which needs AUTH_JWKS_URL or AUTH_PUBLIC_KEY`)
  if (!secret && asymmetric.length === 0) throw new ConfigError('Invalid configuration: AUTH_ALGORITHMS must list at least one algorithm (got none)')
  if (hasPublic && asymmetric.length === 0) throw new ConfigError('Invalid configuration: AUTH_ALGORITHMS lists no asymmetric algorithm, so AUTH_JWKS_URL or AUTH_PUBLIC_KEY would verify nothing')
  return { secret, asymmetric }
}

/** The native webhook events WEBHOOK_EVENTS may name. */
export const WEBHOOK_EVENT_NAMES = ['room_occupied', 'room_vacated', 'member_joined', 'member_left', 'message_published'] as const

/** The native webhook events to send (none without WEBHOOK_URL); throws a ConfigError naming the setting. */
export function webhookEvents (config: Pick<Config, 'WEBHOOK_URL' | 'WEBHOOK_SECRET' | 'WEBHOOK_EVENTS'>): Set<string> {
  if (config.WEBHOOK_URL === undefined) return new Set()
  if (config.WEBHOOK_SECRET === undefined) throw new ConfigError('Invalid configuration: WEBHOOK_URL needs WEBHOOK_SECRET (whsec_ and base64 of 24 to 64 random bytes), which signs every webhook')
  try {
    webhookKey(config.WEBHOOK_SECRET)
  } catch (err) {
    throw new ConfigError(`Invalid configuration: WEBHOOK_SECRET ${(err as Error).message}`)
  }
  const names = config.WEBHOOK_EVENTS.split(',').map(s => s.trim()).filter(Boolean)
  for (const name of names) {
    if (!(WEBHOOK_EVENT_NAMES as readonly string[]).includes(name)) throw new ConfigError(`Invalid configuration: WEBHOOK_EVENTS must list some of ${WEBHOOK_EVENT_NAMES.join(', ')} (got ${JSON.stringify(name)})`)
  }
  return new Set(names)
}

/**
 * The secret signing the proxy hooks' requests: PROXY_SECRET, else
 * WEBHOOK_SECRET; undefined without any PROXY_*_URL. Throws a ConfigError
 * when a URL is set without one, or for a secret that is not one.
 */
export function proxySecret (config: Pick<Config, 'PROXY_CONNECT_URL' | 'PROXY_JOIN_URL' | 'PROXY_PUBLISH_URL' | 'PROXY_RPC_URL' | 'PROXY_SECRET' | 'WEBHOOK_SECRET'>): string | undefined {
  const named = (['PROXY_CONNECT_URL', 'PROXY_JOIN_URL', 'PROXY_PUBLISH_URL', 'PROXY_RPC_URL'] as const).find(k => config[k] !== undefined)
  if (named === undefined) return undefined
  for (const key of ['PROXY_CONNECT_URL', 'PROXY_JOIN_URL', 'PROXY_PUBLISH_URL', 'PROXY_RPC_URL'] as const) {
    const url = config[key]
    if (url !== undefined && !URL.canParse(url)) throw new ConfigError(`Invalid configuration: ${key} must be an http:// or https:// URL (got ${JSON.stringify(url)})`)
  }
  const secret = config.PROXY_SECRET ?? config.WEBHOOK_SECRET
  const which = config.PROXY_SECRET !== undefined ? 'PROXY_SECRET' : 'WEBHOOK_SECRET'
  if (secret === undefined) throw new ConfigError(`Invalid configuration: ${named} needs PROXY_SECRET (or WEBHOOK_SECRET): whsec_ and base64 of 24 to 64 random bytes, which signs every hook request`)
  try {
    webhookKey(secret)
  } catch (err) {
    throw new ConfigError(`Invalid configuration: ${which} ${(err as Error).message}`)
  }
  return secret
}

/** Asymmetric algorithms AUTH_ALGORITHMS may name (kept in step with plugins/engine/token-keys.ts). */
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const

/** TRUST_PROXY: false, true, a hop count, or a comma list of addresses/CIDRs. */
export function parseTrustProxy (value: string): TrustProxy {
  const v = value.trim().toLowerCase()
  if (v === 'false' || v === '0' || v === '') return false
  if (v === 'true') return true
  if (/^\d+$/.test(v)) return Number(v)
  const list = value.split(',').map(s => s.trim()).filter(Boolean)
  if (!list.every(s => /^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(s) || ['loopback', 'linklocal', 'uniquelocal'].includes(s))) {
    throw new ConfigError(`Invalid configuration: TRUST_PROXY must be false, true, a hop count or a comma list of addresses/CIDRs (got ${JSON.stringify(value)})`)
  }
  return list
}

/** CORS_ORIGINS as a list; `*` stays `*` only when configured explicitly. */
export function parseOrigins (value: string): string[] {
  return value.split(',').map(s => s.trim().replace(/\/$/, '')).filter(Boolean)
}

export interface ConfigPluginOptions {
  /** A ready configuration; when absent it is read from `env` (default: process.env). */
  config?: Config
  env?: Record<string, string | undefined>
}

export default fp<ConfigPluginOptions>(async function config (app, opts) {
  app.decorate('config', opts.config ?? loadConfig(opts.env ?? process.env))
}, { name: 'config', fastify: '5.x' })
