import fp from 'fastify-plugin'
import tracing, { type TracingOptions } from './tracing.js'
import requestLog, { type RequestLogOptions } from './request-log.js'
import status, { type StatusOptions } from './status.js'
import metrics, { type MetricsOptions } from './metrics.js'

export { default as tracing, tracedMessages, tracedBatches } from './tracing.js'
export type { TracingOptions, Tracing } from './tracing.js'
export { default as requestLog, clientErrorHandler, EventLogController, listeningEvent, redactUrl, pathOf } from './request-log.js'
export type { RequestLogOptions } from './request-log.js'
export { default as status, StatusReport } from './status.js'
export type { StatusOptions } from './status.js'
export { default as metrics, Metrics, Tally, closeCodeLabel, routeDurations } from './metrics.js'
export type { MetricsOptions } from './metrics.js'
export { default as messageRate, MessageRate } from './message-rate.js'
export type { MessageRateOptions } from './message-rate.js'

export interface ObservabilityOptions {
  tracing?: TracingOptions
  requestLog?: RequestLogOptions
  status?: StatusOptions
  metrics?: MetricsOptions
}

/**
 * What an operator reads: traces, one log line per request, /api/status
 * sections and Prometheus metrics. The message rate is exported alone: it
 * needs the dispatcher, which registers after this.
 */
export default fp<ObservabilityOptions>(async function observability (app, opts) {
  await app.register(tracing, opts.tracing ?? {})
  await app.register(requestLog, opts.requestLog ?? {})
  await app.register(status, opts.status ?? {})
  await app.register(metrics, opts.metrics ?? {})
}, { name: 'observability', fastify: '5.x', dependencies: ['identity'] })
