import fp from 'fastify-plugin'
import type { Store } from './interface.js'
import { StoreHealth } from './health.js'
import { SqliteStore } from './sqlite.js'
import { RedisStore } from './redis.js'

export * from './interface.js'
export { StoreHealth, storeFailureReason } from './health.js'
export type { StoreHealthOptions } from './health.js'
export { SqliteStore, StoreOpenError } from './sqlite.js'
export { RedisStore } from './redis.js'

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
}

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
    /** Whether the store can write (SQLite; a Redis outage is the redis plugin's health check). */
    storeHealth: StoreHealth
  }
}

export default fp<StoreOptions>(async function store (app, opts) {
  let store: Store | undefined
  const health = new StoreHealth(app.log, { probeIntervalMs: opts.probeIntervalMs, probe: () => store?.probeWrite?.() })
  const link = app.hasDecorator('redisLink') ? app.redisLink : null
  const metrics = app.hasDecorator('metrics') ? app.metrics : undefined
  if (link) {
    // REDIS_URL is set: Redis holds rooms and inboxes for every instance
    store = new RedisStore(link.commands, {
      inboxMax: opts.inboxMax ?? 100,
      inboxTtlMs: opts.inboxTtlMs ?? 86400000,
      requireReady: () => link.requireReady()
    })
    app.log.info({ event: 'store.opened', kind: 'redis' }, 'store opened')
  } else {
    try {
      store = SqliteStore.open({
        dataDir: opts.dataDir ?? './data',
        groupCommit: opts.groupCommit ?? true,
        inboxMax: opts.inboxMax ?? 100,
        inboxTtlMs: opts.inboxTtlMs ?? 86400000,
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
  if (app.hasDecorator('tracing')) store.batchTracer = app.tracing.batchTracer?.(store.kind)
  const opened: Store = store
  app.decorate('store', opened)
  app.decorate('storeHealth', health)
  app.statusReport.section('store', () => ({ kind: opened.kind, writable: health.problem === null, ...(health.problem === null ? {} : { reason: health.problem }) }))
  app.statusReport.check('store', () => health.problem === null ? null : `writes fail: ${health.problem}`)
  app.addHook('onClose', async () => {
    const started = Date.now()
    health.stopProbe()
    await opened.close()
    app.log.info({ event: 'shutdown.step', step: 'store_closed', kind: opened.kind, ms: Date.now() - started }, 'store closed')
  })
}, { name: 'store', fastify: '5.x', dependencies: ['status'] })
