import fp from 'fastify-plugin'
import config, { type ConfigPluginOptions } from './config.js'
import errors from './errors.js'
import identity from './identity.js'

export { default as config, ConfigSchema, ConfigError, exitOnConfigError, loadConfig, parseOrigins, parseTrustProxy } from './config.js'
export type { Config, ConfigPluginOptions, TrustProxy } from './config.js'
export { default as errors, errorBody, ErrorRef, ErrorSchema, HTTP_ERROR_CODES, InvalidJsonError, parseJson } from './errors.js'
export { default as identity } from './identity.js'
export type { Principal } from './identity.js'
export { default as redis, RedisLink, RedisUnavailableError, KEY_PREFIX, instanceKey } from './redis.js'
export type { RedisPluginOptions, RedisStatus } from './redis.js'
export { uuid } from './ids.js'

/** The configuration: a ready one, or read from `env` [process.env]. */
export type CoreOptions = ConfigPluginOptions

/**
 * The bottom layer: the configuration, the HTTP error dialect and who is asking
 * (`request.principal`). The Redis link is exported alone: it needs `status`,
 * `connections` and `metrics`, which sit above.
 */
export default fp<CoreOptions>(async function core (app, opts) {
  await app.register(config, opts)
  await app.register(errors)
  await app.register(identity)
}, { name: 'core', fastify: '5.x' })
