import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { FastifyRequest } from 'fastify'

export interface RateLimitOptions {
  /** Requests per client key per window [60]. */
  max?: number
  /** Window length in milliseconds [60000]. */
  windowMs?: number
  /** A shared store for many instances (an ioredis client), as @fastify/rate-limit takes it. */
  redis?: unknown
  /** What the shared counters' keys start with [`sb:rl:`]. */
  keyPrefix?: string
}

/**
 * The HTTP rate limit of every route registered in the same encapsulated
 * context as this plugin (app.ts registers it with the HTTP API), whatever
 * spelling of the path reached the route; routes outside it are not limited.
 */
export default fp<RateLimitOptions>(async function rateLimitPolicy (app, opts) {
  const metrics = app.metrics
  app.statusReport.section('rateLimit', () => ({ max: opts.max ?? 60, windowMs: opts.windowMs ?? 60000 }))
  await app.register(rateLimit, {
    global: true,
    max: opts.max ?? 60,
    timeWindow: opts.windowMs ?? 60000,
    keyGenerator: (request: FastifyRequest) => request.clientKey,
    // the contract's code and a message naming the limit (the error handler sends it in Fastify's shape)
    errorResponseBuilder: (_request: FastifyRequest, context: { max: number, after: string, statusCode: number }) =>
      Object.assign(new Error(`more than ${context.max} requests per ${opts.windowMs ?? 60000} ms (RATE_LIMIT_MAX); retry in ${context.after}`), { statusCode: context.statusCode, code: 'rate_limited' }),
    // shared across instances; while Redis is down requests pass unlimited rather than fail, so /api/status can say `degraded`
    ...(opts.redis ? { redis: opts.redis as never, nameSpace: opts.keyPrefix ?? 'sb:rl:', skipOnError: true } : {}),
    onExceeded: (request: FastifyRequest, key: string) => {
      metrics?.rateLimited.inc({ transport: 'http' })
      request.log.warn({ event: 'rate_limit.exceeded', clientKey: key, url: request.routeOptions.url, limit: opts.max ?? 60, windowMs: opts.windowMs ?? 60000 }, 'HTTP rate limit exceeded')
    }
  })
}, { name: 'rate-limit', fastify: '5.x', dependencies: ['identity', 'metrics', 'status'] })
