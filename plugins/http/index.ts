import fp from 'fastify-plugin'
import openapi, { type OpenApiOptions } from './openapi.js'
import cors, { type CorsOptions } from './cors.js'

export { default as cors, OriginPolicy, listenOrigins } from './cors.js'
export type { CorsOptions, CheckUpgradeOrigin } from './cors.js'
export { default as rateLimit } from './rate-limit.js'
export type { RateLimitOptions } from './rate-limit.js'
export { default as openapi } from './openapi.js'
export type { OpenApiOptions } from './openapi.js'
export { default as webConsole } from './console.js'
export type { ConsoleOptions } from './console.js'
export { default as securityHeaders, PAGE_CSP_DIRECTIVES } from './security-headers.js'
export { default as pages } from './pages.js'
export { asyncApiDocument, serverMessageTypes } from './asyncapi.js'
export { default as websocket } from './websocket.js'
export type { WebSocketOptions, WebSocket, WebsocketHandler } from './websocket.js'
export type { AsyncApiInput } from './asyncapi.js'

export interface HttpOptions {
  openapi?: OpenApiOptions
  cors?: CorsOptions
}

/**
 * Thin wrappers of third-party plugins. These two apply to every route
 * registered after them; the rate limit belongs to the encapsulated context
 * of the routes it limits and the console to the end, so they are exported alone.
 */
export default fp<HttpOptions>(async function http (app, opts) {
  await app.register(openapi, opts.openapi ?? {})
  await app.register(cors, opts.cors ?? {})
}, { name: 'http', fastify: '5.x', dependencies: ['identity'] })
