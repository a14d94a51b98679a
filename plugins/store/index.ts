import fp from 'fastify-plugin'
import type { Store } from './interface.js'
import { StoreHealth } from './health.js'
import { SqliteStore } from './sqlite.js'
import { RedisStore } from './redis.js'
import { IdempotentWrites } from './idempotency.js'

export * from './interface.js'
export { StoreHealth, storeFailureReason } from './health.js'
export type { StoreHealthOptions } from './health.js'
export { SqliteStore, StoreOpenError } from './sqlite.js'
export { RedisStore } from './redis.js'
export { RedisDocumentStore } from './documents.js'
export { RedisLastEvents } from './last-events.js'
export { IdempotentWrites, clientKeys, type IdempotentOutcome } from './idempotency.js'

export interface StoreOptions {
  /** Directory of the SQLite database, created if missing [./data]. */
  dataDir?: string
  /** Batch the writes of one event-loop turn into one transaction [true]. */
  groupCommit?: boolean
  /** Queued direct messages kept per offline client [100]. */
  inboxMax?: number
  /** How long a queued direct message waits [86400000]. */
  inboxTtlMs?: number
  /** While writes fail, how often a probe write checks whether they work again [5000]. */
  probeIntervalMs?: number
  /** How long a write's idempotency key is remembered [600000]. */
  idempotencyTtlMs?: number
  /** Idempotency keys remembered per owner (client id, or HTTP client key); the oldest go first [1000]. */
  idempotencyMaxKeys?: number
  /** How often expired idempotency keys are swept (SQLite; Redis expires them itself) [60000]. */
  idempotencyExpireIntervalMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
    /** Whether the store can write (SQLite; a Redis outage is the redis plugin's health check). */
    storeHealth: StoreHealth
    /** Exactly-once writes by idempotency key, over this store. */
    idempotency: IdempotentWrites
  }
}

export default fp<StoreOptions>(async function store (app, opts) {
  let store: Store | undefined
  const health = new StoreHealth(app.log, { probeIntervalMs: opts.probeIntervalMs, probe: () => store?.probeWrite?.() })
  const link = app.redisLink
  const metrics = app.metrics
  if (link) {
    // REDIS_URL is set: Redis holds rooms and inboxes for every instance
    store = new RedisStore(link.commands, {
      inboxMax: opts.inboxMax ?? 100,
      inboxTtlMs: opts.inboxTtlMs ?? 86400000,
      idempotencyMaxKeys: opts.idempotencyMaxKeys ?? 1000,
      requireReady: () => link.requireReady(),
      keyPrefix: link.prefix,
      cluster: link.cluster
    })
    app.log.info({ event: 'store.opened', kind: 'redis' }, 'store opened')
  } else {
    try {
      store = SqliteStore.open({
        dataDir: opts.dataDir ?? './data',
        groupCommit: opts.groupCommit ?? true,
        inboxMax: opts.inboxMax ?? 100,
        inboxTtlMs: opts.inboxTtlMs ?? 86400000,
        idempotencyMaxKeys: opts.idempotencyMaxKeys ?? 1000,
        log: app.log,
        health,
        onCommit: metrics && ((writes, seconds) => {
          metrics.storeBatchSize.observe({ store: 'sqlite' }, writes)
          metrics.storeWriteSeconds.observe({ store: 'sqlite' }, seconds)
        })
      })
    } catch (err) {
      app.log.fatal({ event: 'store.open_failed', reason: (err as Error).message }, 'the store cannot be used; refusing to start')
      throw err
    }
  }
  // tracing registers first: when on, each committed batch gets a span
  store.batchTracer = app.tracing.batchTracer?.(store.kind)
  const opened: Store = store
  app.decorate('store', opened)
  app.decorate('storeHealth', health)
  const ttlMs = opts.idempotencyTtlMs ?? 600000
  app.decorate('idempotency', new IdempotentWrites(opened.idempotency, { ttlMs, maxKeys: opts.idempotencyMaxKeys ?? 1000 }))
  const sweeper = setInterval(() => {
    opened.idempotency.expire().then(dropped => {
      if (dropped > 0) app.log.info({ event: 'idempotency.expired', dropped }, 'expired idempotency keys')
    }, err => {
      if (!(err as { reported?: boolean }).reported) app.log.error({ event: 'idempotency.expire_failed', err }, 'idempotency key expiry failed')
    })
    opened.lastEvents.expire().catch(err => {
      if (!(err as { reported?: boolean }).reported) app.log.error({ event: 'last_events.expire_failed', err }, 'expiring last events failed')
    })
  }, opts.idempotencyExpireIntervalMs ?? Math.min(ttlMs, 60000)).unref()
  app.statusReport.section('store', () => ({ kind: opened.kind, writable: health.problem === null, ...(health.problem === null ? {} : { reason: health.problem }) }))
  app.statusReport.check('store', () => health.problem === null ? null : `writes fail: ${health.problem}`)
  app.addHook('onClose', async () => {
    const started = Date.now()
    clearInterval(sweeper)
    health.stopProbe()
    await opened.close()
    app.log.info({ event: 'shutdown.step', step: 'store_closed', kind: opened.kind, ms: Date.now() - started }, 'store closed')
  })
}, { name: 'store', fastify: '5.x', dependencies: ['status', 'metrics', 'tracing', 'redis'] })
