import fp from 'fastify-plugin'
import config, { type ConfigPluginOptions } from './config.js'
import errors from './errors.js'
import identity from './identity.js'
import status, { type StatusOptions } from './status.js'
import metrics, { type MetricsOptions } from './metrics.js'

export { default as config, ConfigSchema, ConfigError, exitOnConfigError, authAlgorithms, webhookEvents, proxySecret, redisSentinels, redisClusterNodes, parseHostPorts, WEBHOOK_EVENT_NAMES, loadConfig, parseOrigins, parseTrustProxy } from './config.js'
export type { Config, ConfigPluginOptions, TrustProxy } from './config.js'
export { default as errors, errorBody, ErrorRef, ErrorSchema, HTTP_ERROR_CODES, InvalidJsonError, parseJson } from './errors.js'
export { default as identity } from './identity.js'
export type { Principal } from './identity.js'
export { default as redis, RedisLink, RedisUnavailableError, DEFAULT_KEY_PREFIX, instanceKey } from './redis.js'
export type { RedisPluginOptions, RedisStatus } from './redis.js'
export { uuid } from './ids.js'
export { default as status, StatusReport } from './status.js'
export type { StatusOptions } from './status.js'
export { default as metrics, Metrics, Tally, closeCodeLabel, routeDurations } from './metrics.js'
export type { MetricsOptions } from './metrics.js'

/** The configuration (a ready one, or read from `env` [process.env]) and the status and metrics options. */
export type CoreOptions = ConfigPluginOptions & { status?: StatusOptions, metrics?: MetricsOptions }

/**
 * The bottom layer: the configuration, the HTTP error dialect, who is asking
 * (`request.principal`), the instance's lifecycle and health (`status`: what
 * /ready and /api/status say) and its metrics registry. The Redis link is
 * exported alone: app.ts registers it where its close comes last.
 */
export default fp<CoreOptions>(async function core (app, opts) {
  await app.register(config, opts)
  await app.register(errors)
  await app.register(identity)
  await app.register(status, opts.status ?? {})
  await app.register(metrics, opts.metrics ?? {})
}, { name: 'core', fastify: '5.x' })
