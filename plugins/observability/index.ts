import fp from 'fastify-plugin'
import tracing, { type TracingOptions } from './tracing.js'
import requestLog, { type RequestLogOptions } from './request-log.js'

export { default as tracing, tracedMessages, tracedBatches } from './tracing.js'
export type { TracingOptions, Tracing } from './tracing.js'
export { default as requestLog, clientErrorHandler, EventLogController, listeningEvent, redactUrl, pathOf } from './request-log.js'
export type { RequestLogOptions } from './request-log.js'

export interface ObservabilityOptions {
  tracing?: TracingOptions
  requestLog?: RequestLogOptions
}

/**
 * What an operator reads beside the status and the metrics (plugins/core):
 * traces (OpenTelemetry) and one log line per request. Tracing registers
 * first: @fastify/otel wraps the handlers of the routes registered after it.
 */
export default fp<ObservabilityOptions>(async function observability (app, opts) {
  await app.register(tracing, opts.tracing ?? {})
  await app.register(requestLog, opts.requestLog ?? {})
}, { name: 'observability', fastify: '5.x', dependencies: ['identity'] })
