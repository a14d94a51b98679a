import fp from 'fastify-plugin'
import { createRequire } from 'node:module'
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'

export interface RateLimitOptions {
  /** Requests per client key per window [60]. */
  max?: number
  /** Window length in milliseconds [60000]. */
  windowMs?: number
  /** A shared store for many instances (an ioredis client), as @fastify/rate-limit takes it. */
  redis?: unknown
  /** What the shared counters' keys start with [`sb:rl:`]. */
  keyPrefix?: string
  /** Whether the shared store can answer now; while not, requests pass without being counted (never queued behind it). */
  sharedReady?: () => boolean
}

/** What a @fastify/rate-limit store answers: the requests counted in the key's window and the ms left in it. */
interface Count { current: number, ttl: number }
/** A @fastify/rate-limit store: `incr` calls back synchronously (LocalStore) or once Redis answered (RedisStore). */
interface Store { incr (key: string, cb: (err: Error | null, res: Count | null) => void, timeWindow: number, max: number): void }
type StoreClass = new (continueExceeding: boolean, exponentialBackoff: boolean, ...rest: unknown[]) => Store

// @fastify/rate-limit's own stores: its in-memory fixed window (an LRU of 5000 keys) and its Redis script
const require = createRequire(import.meta.url)
const LocalStore = require('@fastify/rate-limit/store/LocalStore.js') as StoreClass
const RedisStore = require('@fastify/rate-limit/store/RedisStore.js') as StoreClass

const UNITS: Array<[number, string]> = [[31557600000, 'year'], [86400000, 'day'], [3600000, 'hour'], [60000, 'minute'], [1000, 'second']]

/** A wait in words, as @fastify/rate-limit words it (`1 minute`, `30 seconds`, `500 ms`). */
export function retryIn (ms: number): string {
  for (const [size, unit] of UNITS) {
    if (ms >= size) {
      const n = Math.round(ms / size)
      return `${n} ${unit}${n === 1 ? '' : 's'}`
    }
  }
  return `${ms} ms`
}

/**
 * The HTTP rate limit of every route registered in the same encapsulated
 * context as this plugin (app.ts registers it with the HTTP API), whatever
 * spelling of the path reached the route; routes outside it are not limited.
 * @fastify/rate-limit's stores and its answer (x-ratelimit-limit,
 * -remaining and -reset on every response; 429 with retry-after past the
 * limit), from one callback hook: with the in-memory store a request is
 * counted without a promise (the library's hook is async, three awaits per
 * request); with Redis it waits for the script's answer, and while Redis is
 * down requests pass unlimited rather than fail, so /api/status can say `degraded`.
 */
export default fp<RateLimitOptions>(async function rateLimitPolicy (app, opts) {
  const metrics = app.metrics
  const max = opts.max ?? 60
  const windowMs = opts.windowMs ?? 60000
  app.statusReport.section('rateLimit', () => ({ max, windowMs }))
  const shared = opts.redis !== undefined && opts.redis !== null
  const store = shared ? new RedisStore(false, false, opts.redis, opts.keyPrefix ?? 'sb:rl:') : new LocalStore(false, false, 5000)

  function counted (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction, key: string, err: Error | null, res: Count | null): void {
    // a shared store that cannot answer: the request passes, counted as the first of its window
    if (err !== null && !shared) return done(err)
    const current = res?.current ?? 0
    const reset = Math.ceil((res?.ttl ?? 0) / 1000)
    reply.header('x-ratelimit-limit', max)
    if (current <= max) {
      reply.header('x-ratelimit-remaining', max - current).header('x-ratelimit-reset', reset)
      return done()
    }
    metrics?.rateLimited.inc({ transport: 'http' })
    request.log.warn({ event: 'rate_limit.exceeded', clientKey: key, url: request.routeOptions.url, limit: max, windowMs }, 'HTTP rate limit exceeded')
    reply.header('x-ratelimit-remaining', 0).header('x-ratelimit-reset', reset).header('retry-after', reset)
    // the contract's code and a message naming the limit (the error handler sends it in Fastify's shape)
    done(Object.assign(new Error(`more than ${max} requests per ${windowMs} ms (RATE_LIMIT_MAX); retry in ${retryIn(reset * 1000)}`), { statusCode: 429, code: 'rate_limited' }))
  }

  const sharedReady = opts.sharedReady ?? (() => true)
  app.addHook('onRequest', function rateLimit (request, reply, done) {
    const key = request.clientKey
    if (shared && !sharedReady()) return counted(request, reply, done, key, new Error('the shared store is down'), null)
    store.incr(key, (err, res) => counted(request, reply, done, key, err, res), windowMs, max)
  })
}, { name: 'rate-limit', fastify: '5.x', dependencies: ['identity', 'metrics', 'status'] })
