import fp from 'fastify-plugin'
import {
  context, propagation, trace, ROOT_CONTEXT, SpanKind, SpanStatusCode,
  type Context, type Link, type SpanContext, type Tracer, type TracerProvider
} from '@opentelemetry/api'
import { importOptional } from '../core/config.js'
import { pathOf } from './request-log.js'

export interface TracingOptions {
  /**
   * Trace into this provider (tests, embedding). The caller owns it (flushes
   * and shuts it down); tracing is on whenever one is given.
   */
  tracerProvider?: TracerProvider
  /**
   * Build a provider that exports OTLP over HTTP, configured by the standard
   * OTEL_EXPORTER_OTLP_* variables [false]. app.ts turns it on when
   * OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set or OTEL_TRACES_ENABLED=true.
   */
  enabled?: boolean
  /** service.name of the built provider's resource (OTEL_SERVICE_NAME wins) ['switchboard']. */
  serviceName?: string
  /** service.version of the built provider's resource. */
  serviceVersion?: string
}

/**
 * Runs the handling of one message in a span: the dispatcher of a protocol
 * calls it with the session, the parsed message and the handler, which it
 * must call once and resolve after (with the outcome: `ok` or an error code).
 */
export type AroundMessage = (session: { readonly id: string }, message: { readonly type: string, readonly room?: unknown }, handle: () => Promise<string>) => Promise<void>

/** Traces store commits: the store captures each writer's context and runs each batch's commit in a span. */
export interface BatchTracer {
  /** Called as a write is queued: the caller's trace context, handed back to `trace`. */
  capture (): unknown
  /** Runs the commit of one batch in a span; `origins` are the captured contexts of its writes, in order. */
  trace (origins: unknown[], rooms: number, commit: () => Error | undefined): void
}

/** What other plugins may use to add spans of their own. */
export interface Tracing {
  readonly enabled: boolean
  /** A no-op tracer when tracing is off. */
  readonly tracer: Tracer
  /** `ws <type>` spans, for the dispatcher to wrap each message in; undefined when tracing is off. */
  readonly aroundMessage?: AroundMessage
  /** `store.commit` spans for a store of this kind, for the store to trace its batches; undefined when off. */
  readonly batchTracer?: (system: string) => BatchTracer
}

declare module 'fastify' {
  interface FastifyInstance {
    tracing: Tracing
  }
}

/** Routes whose requests get no span: the upgrade (each message gets its own) and probes/scrapes. */
const UNTRACED_PATHS = new Set(['/ws', '/health', '/ready', '/metrics'])

/** `ws <type>` spans: one per message of a registered type, a root of its own trace. */
export function tracedMessages (tracer: Tracer): AroundMessage {
  return async (conn, message, handle) => {
    const span = tracer.startSpan(`ws ${message.type}`, {
      kind: SpanKind.SERVER,
      attributes: { 'switchboard.ws.type': message.type, 'switchboard.connection_id': conn.id }
    }, ROOT_CONTEXT)
    if (typeof message.room === 'string' && message.room.length <= 128) span.setAttribute('switchboard.room', message.room)
    try {
      const outcome = await context.with(trace.setSpan(ROOT_CONTEXT, span), handle)
      span.setAttribute('switchboard.ws.outcome', outcome)
      if (outcome === 'internal_error') span.setStatus({ code: SpanStatusCode.ERROR, message: outcome })
    } catch (err) {
      span.recordException(err as Error)
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message })
      throw err
    } finally {
      span.end()
    }
  }
}

/**
 * `store.commit` spans. One SQLite transaction commits the writes of many
 * requests: its span is the child of the first traced request in the batch and
 * links to every other one, so each request's trace reaches the commit it waited for.
 */
export function tracedBatches (tracer: Tracer, system: string): BatchTracer {
  return {
    capture: () => context.active(),
    trace (origins, rooms, commit) {
      let parent: Context = ROOT_CONTEXT
      let parentSpan: SpanContext | undefined
      const links: Link[] = []
      const seen = new Set<string>()
      for (const origin of origins) {
        const spanContext = trace.getSpanContext(origin as Context)
        if (spanContext === undefined || seen.has(spanContext.spanId)) continue
        seen.add(spanContext.spanId)
        if (parentSpan === undefined) {
          parentSpan = spanContext
          parent = origin as Context
        } else {
          links.push({ context: spanContext })
        }
      }
      const span = tracer.startSpan('store.commit', {
        kind: SpanKind.INTERNAL,
        attributes: { 'db.system.name': system, 'switchboard.store.writes': origins.length, 'switchboard.store.rooms': rooms },
        links
      }, parent)
      try {
        const failure = commit()
        if (failure !== undefined) {
          span.recordException(failure)
          span.setStatus({ code: SpanStatusCode.ERROR, message: failure.message })
        }
      } finally {
        span.end()
      }
    }
  }
}

/** What turned tracing on, for the error when its optional packages are not installed. */
const TRACING_SETTING = 'tracing (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_ENABLED=true)'

let contextInstalled = false

/** Async context and W3C trace context, process-wide, installed only once tracing is on. */
async function installContext (): Promise<void> {
  if (contextInstalled) return
  contextInstalled = true
  const [{ AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }] = await Promise.all([
    importOptional('@opentelemetry/context-async-hooks', TRACING_SETTING, () => import('@opentelemetry/context-async-hooks')),
    importOptional('@opentelemetry/core', TRACING_SETTING, () => import('@opentelemetry/core'))
  ])
  // false when the embedding app registered its own: then that one is used
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
}

/** A provider that batches spans to the OTLP/HTTP exporter (endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*). */
async function otlpProvider (opts: TracingOptions) {
  const [{ BasicTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, resources] = await Promise.all([
    importOptional('@opentelemetry/sdk-trace-base', TRACING_SETTING, () => import('@opentelemetry/sdk-trace-base')),
    importOptional('@opentelemetry/exporter-trace-otlp-http', TRACING_SETTING, () => import('@opentelemetry/exporter-trace-otlp-http')),
    importOptional('@opentelemetry/resources', TRACING_SETTING, () => import('@opentelemetry/resources'))
  ])
  const resource = resources.defaultResource()
    .merge(resources.resourceFromAttributes({
      'service.name': opts.serviceName ?? 'switchboard',
      ...(opts.serviceVersion === undefined ? {} : { 'service.version': opts.serviceVersion })
    }))
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the defaults above
    .merge(resources.detectResources({ detectors: [resources.envDetector] }))
  return new BasicTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] })
}

/**
 * OpenTelemetry tracing: HTTP requests (@fastify/otel), WebSocket messages and
 * store commits. Off by default, and then it costs nothing: no context
 * manager, no instrumentation loaded, no hooks installed.
 * Register it before the routes (its onRoute hook wraps their handlers).
 */
export default fp<TracingOptions>(async function tracing (app, opts) {
  if (opts.tracerProvider === undefined && opts.enabled !== true) {
    app.decorate('tracing', { enabled: false, tracer: trace.getTracer('switchboard') })
    return
  }

  const built = opts.tracerProvider === undefined ? await otlpProvider(opts) : undefined
  const provider: TracerProvider = opts.tracerProvider ?? built as TracerProvider
  await installContext()
  const tracer = provider.getTracer('switchboard', opts.serviceVersion)
  app.decorate('tracing', { enabled: true, tracer, aroundMessage: tracedMessages(tracer), batchTracer: (system: string) => tracedBatches(tracer, system) })

  const { FastifyOtelInstrumentation } = await importOptional('@fastify/otel', TRACING_SETTING, () => import('@fastify/otel'))
  const http = new FastifyOtelInstrumentation({
    // a span per request and one for its handler; none per hook (a dozen each, mostly noise)
    instrumentHooks: false,
    ignorePaths: route => UNTRACED_PATHS.has(pathOf(route.url)),
    // url.path is a path: @fastify/otel records the query too, where a token may be
    requestHook: (span, request) => { span.setAttribute('url.path', pathOf(request.url)) }
  })
  http.setTracerProvider(provider)
  await app.register(http.plugin())

  app.addHook('onClose', async () => {
    http.disable()
    // the store commits its last batch in an onClose hook that runs before this one
    if (built !== undefined) await built.shutdown()
  })
  app.log.info({ event: 'tracing.enabled', exporter: built === undefined ? 'provided' : 'otlp-http' }, 'OpenTelemetry tracing on')
}, { name: 'tracing', fastify: '5.x' })
