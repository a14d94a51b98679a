import fp from 'fastify-plugin'
import type { onResponseHookHandler } from 'fastify'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** Close codes with a label of their own; a client chooses its close code, so the rest are bucketed. */
const CLOSE_CODE_LABELS = new Set([1000, 1001, 1006, 1008, 1009, 1011, 1012, 1013])

/** The `code` label of a close: one of the codes above, `4xxx` (application codes), or `other`: never a client's own value. */
export function closeCodeLabel (code: number): string {
  if (CLOSE_CODE_LABELS.has(code)) return String(code)
  if (code >= 4000 && code <= 4999) return '4xxx'
  return 'other'
}

export interface MetricsOptions {
  /** Prefix of every metric name ['switchboard_']. */
  prefix?: string
  /** Also collect Node's process metrics (CPU, memory, event-loop lag, GC) [true]. */
  defaultMetrics?: boolean
}

/**
 * Increments of a one-label counter, kept as plain numbers by label value and
 * added to the counter when it is read (scrape, `get()`): a message costs a Map
 * update instead of prom-client's label check and hashing on every increment.
 */
export class Tally {
  private readonly pending = new Map<string, number>()

  constructor (private readonly counter: Counter<string>, private readonly label: string) {}

  add (value: string, n = 1): void {
    this.pending.set(value, (this.pending.get(value) ?? 0) + n)
  }

  /** Adds what was counted since the last read to the counter. */
  flush (): void {
    for (const [value, n] of this.pending) this.counter.inc({ [this.label]: value }, n)
    this.pending.clear()
  }
}

/**
 * Every metric of one app instance, in its own registry so two instances in one
 * process (tests, embedding) never share counters. Plugins call these directly;
 * gauges that mirror live state are filled from `collectors` at scrape time.
 */
export class Metrics {
  readonly registry = new Registry()
  private readonly collectors: Array<() => void> = []

  readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>
  readonly connections: Gauge
  readonly connectionAttempts: Counter
  readonly connectionRejections: Counter<'reason'>
  readonly connectionCloses: Counter<'code'>
  readonly messagesIn: Counter<'type'>
  readonly messagesOut: Counter<'type'>
  readonly errors: Counter<'code'>
  readonly rateLimited: Counter<'transport'>
  readonly roomsActive: Gauge
  readonly roomMembers: Gauge
  readonly fanout: Histogram
  readonly storeWriteSeconds: Histogram<'store'>
  readonly storeBatchSize: Histogram<'store'>
  readonly inboxQueued: Counter
  readonly inboxDelivered: Counter
  readonly execRuns: Counter<'outcome'>
  readonly execSeconds: Histogram<'outcome'>
  /** Backend hook calls (PROXY_*_URL), by hook and outcome (allowed, denied, timeout, unreachable, http_error, invalid). */
  readonly proxyDuration: Histogram<'hook' | 'outcome'>
  readonly redisUp: Gauge
  readonly pubsubMessages: Counter<'direction'>
  readonly slowConsumerCloses: Counter
  /** Open sessions of every door, by protocol (switchboard, pusher, y-websocket, hocuspocus, ...). */
  readonly sessions: Gauge<'protocol'>
  readonly sessionCloses: Counter<'protocol' | 'code'>
  readonly sessionSlowConsumerCloses: Counter<'protocol'>
  readonly sessionRateLimited: Counter<'protocol' | 'outcome'>
  /** The hot-path way to count messages by type (read into `messagesIn` / `messagesOut`). */
  readonly messagesInByType: Tally
  readonly messagesOutByType: Tally

  constructor (opts: MetricsOptions = {}) {
    const p = opts.prefix ?? 'switchboard_'
    const registers = [this.registry]
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: p, eventLoopMonitoringPrecision: 20 })
    const collect = (fn: () => void) => { this.collectors.push(fn) }

    this.httpDuration = new Histogram({ name: `${p}http_request_duration_seconds`, help: 'HTTP request duration by route and status', labelNames: ['method', 'route', 'status_code'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers })
    this.connections = new Gauge({ name: `${p}ws_connections`, help: 'Open WebSocket connections', registers })
    this.connectionAttempts = new Counter({ name: `${p}ws_connection_attempts_total`, help: 'WebSocket upgrade requests received', registers })
    this.connectionRejections = new Counter({ name: `${p}ws_connection_rejections_total`, help: 'Upgrades refused, by reason (total, client, origin, auth, shutdown, invalid, proxy: the connect hook)', labelNames: ['reason'], registers })
    this.connectionCloses = new Counter({ name: `${p}ws_connection_closes_total`, help: 'Closed WebSocket connections by close code', labelNames: ['code'], registers })
    this.messagesIn = new Counter({ name: `${p}ws_messages_in_total`, help: 'Valid WebSocket messages received, by type', labelNames: ['type'], registers, collect: () => this.messagesInByType.flush() })
    this.messagesOut = new Counter({ name: `${p}ws_messages_out_total`, help: 'WebSocket messages sent, by type (a broadcast counts each recipient)', labelNames: ['type'], registers, collect: () => this.messagesOutByType.flush() })
    this.messagesInByType = new Tally(this.messagesIn, 'type')
    this.messagesOutByType = new Tally(this.messagesOut, 'type')
    this.errors = new Counter({ name: `${p}ws_errors_total`, help: 'Error replies sent, by code', labelNames: ['code'], registers })
    this.rateLimited = new Counter({ name: `${p}rate_limited_total`, help: 'Requests refused by a rate limit, by transport (http, ws)', labelNames: ['transport'], registers })
    this.roomsActive = new Gauge({ name: `${p}rooms_active`, help: 'Rooms with at least one member on this instance', registers })
    this.roomMembers = new Gauge({ name: `${p}room_members`, help: 'Room memberships (connection x room) on this instance', registers })
    this.fanout = new Histogram({ name: `${p}broadcast_fanout`, help: 'Recipients per broadcast', buckets: [1, 2, 5, 10, 50, 100, 500, 1000, 5000], registers })
    this.storeWriteSeconds = new Histogram({ name: `${p}store_write_duration_seconds`, help: 'Time to commit one batch of writes', labelNames: ['store'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers })
    this.storeBatchSize = new Histogram({ name: `${p}store_batch_size`, help: 'Writes per committed batch (group commit)', labelNames: ['store'], buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers })
    this.inboxQueued = new Counter({ name: `${p}inbox_queued_total`, help: 'Direct messages queued for offline clients', registers })
    this.inboxDelivered = new Counter({ name: `${p}inbox_delivered_total`, help: 'Queued direct messages delivered on reconnect', registers })
    this.execRuns = new Counter({ name: `${p}exec_runs_total`, help: 'Sandboxed code runs by outcome', labelNames: ['outcome'], registers })
    this.execSeconds = new Histogram({ name: `${p}exec_duration_seconds`, help: 'Sandboxed code run duration', labelNames: ['outcome'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers })
    this.proxyDuration = new Histogram({ name: `${p}proxy_request_duration_seconds`, help: 'Backend hook calls (PROXY_*_URL): duration by hook and outcome', labelNames: ['hook', 'outcome'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers })
    this.redisUp = new Gauge({ name: `${p}redis_up`, help: '1 when Redis is ready; 0 when it is down or connecting, and always 0 without REDIS_URL', registers })
    this.pubsubMessages = new Counter({ name: `${p}redis_pubsub_messages_total`, help: 'Redis pub/sub messages, by direction (published, received)', labelNames: ['direction'], registers })
    this.slowConsumerCloses = new Counter({ name: `${p}ws_slow_consumer_closes_total`, help: 'Connections closed because their send buffer passed the cap', registers })
    this.sessions = new Gauge({ name: `${p}connections`, help: 'Open connections of every protocol (switchboard, pusher, y-websocket, hocuspocus, ...)', labelNames: ['protocol'], registers })
    this.sessionCloses = new Counter({ name: `${p}connection_closes_total`, help: 'Closed connections by protocol and close code', labelNames: ['protocol', 'code'], registers })
    this.sessionSlowConsumerCloses = new Counter({ name: `${p}slow_consumer_closes_total`, help: 'Connections closed because their send buffer passed WS_MAX_BUFFERED_BYTES, by protocol', labelNames: ['protocol'], registers })
    this.sessionRateLimited = new Counter({ name: `${p}messages_rate_limited_total`, help: 'Frames over WS_MESSAGES_PER_SECOND, by protocol and outcome (limited: refused; flood: the connection was closed)', labelNames: ['protocol', 'outcome'], registers })
    this.collect = collect
  }

  /** Registers a function that refreshes gauges right before each scrape. */
  readonly collect: (fn: () => void) => void

  async render (): Promise<string> {
    for (const fn of this.collectors) fn()
    return this.registry.metrics()
  }

  get contentType (): string {
    return this.registry.contentType
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
  interface FastifyContextConfig {
    /** false: leave this route out of the HTTP duration histogram. */
    metrics?: boolean
  }
}

/** Observes one request's duration in seconds. */
type Observe = (seconds: number) => void

/**
 * The histogram's children for one route pattern, by method and status: the
 * label set is built and checked once per combination instead of per request.
 */
export function routeDurations (histogram: Histogram<'method' | 'route' | 'status_code'>, route: string): (method: string, status: number) => Observe {
  const byMethod = new Map<string, Map<number, Observe>>()
  return (method, status) => {
    let byStatus = byMethod.get(method)
    if (byStatus === undefined) {
      byStatus = new Map()
      byMethod.set(method, byStatus)
    }
    let observe = byStatus.get(status)
    if (observe === undefined) {
      const child = histogram.labels({ method, route, status_code: String(status) })
      observe = (seconds) => child.observe(seconds)
      byStatus.set(status, observe)
    }
    return observe
  }
}

export default fp<MetricsOptions>(async function metrics (app, opts) {
  const m = new Metrics(opts)
  app.decorate('metrics', m)

  // Each route records its own durations (its pattern and children known up
  // front); requests that match no route are recorded by the global hook below.
  // Upgrades are not HTTP requests to measure, accepted or refused.
  app.addHook('onRoute', route => {
    if (route.config?.metrics === false) return
    const durations = routeDurations(m.httpDuration, route.url)
    const hook: onResponseHookHandler = function recordDuration (request, reply, done) {
      if (!request.ws) durations(request.method, reply.statusCode)(reply.elapsedTime / 1000)
      done()
    }
    route.onResponse = route.onResponse === undefined ? [hook] : [...[route.onResponse].flat(), hook]
  })
  const unmatched = routeDurations(m.httpDuration, 'unmatched')
  app.addHook('onResponse', function recordUnmatched (request, reply, done) {
    if (request.is404 && !request.ws) unmatched(request.method, reply.statusCode)(reply.elapsedTime / 1000)
    done()
  })
}, { name: 'metrics', fastify: '5.x' })
