import fp from 'fastify-plugin'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Operator, type InstanceSnapshot } from './operator.js'

export { Operator, ADMIN_CLOSE_CODE, REASON_MAX_LENGTH } from './operator.js'
export type { ConnectionView, ConnectionFilter, ConnectionQuery, ConnectionPage, DisconnectTarget, InstanceSnapshot } from './operator.js'

export interface AdminOptions {
  /**
   * Whether the operator's routes exist: an admin token is configured, or
   * auth mode is on (a JWT with role `admin` / `admin-readonly`). Off = every
   * admin route answers 404 [false].
   */
  enabled?: boolean
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The operator's views and actions over every instance (plugins/admin). */
    admin: { enabled: boolean, operator: Operator }
  }
  interface FastifyContextConfig {
    /** An admin route that changes something: refused (403) to a read-only admin. */
    adminWrite?: boolean
    /** What an admin route does, as the `admin.action` log line names it. */
    adminAction?: string
  }
}

/**
 * The operator's console backend: this instance answers the cluster's
 * questions about it (a snapshot, its connections, disconnects), and the
 * routes in routes/api/admin.ts ask every instance through `admin.operator`.
 * Needs the connection registry, the cluster requests, rooms and the status.
 */
export default fp<AdminOptions>(async function admin (app, opts) {
  // the histogram records the time between its samples: the lag is what exceeds the sampling interval
  const resolutionMs = 20
  const lag = monitorEventLoopDelay({ resolution: resolutionMs })
  lag.enable()
  const lagOf = (ns: number) => Number.isFinite(ns) && ns > 0 ? round(Math.max(0, ns / 1e6 - resolutionMs)) : 0
  // a recent figure, not one since start: the histogram restarts every 10 seconds, and a snapshot reads the last full window
  let lagMs = { mean: 0, p99: 0, max: 0 }
  const sample = setInterval(() => {
    lagMs = { mean: lagOf(lag.mean), p99: lagOf(lag.percentile(99)), max: lagOf(lag.max) }
    lag.reset()
  }, 10000).unref()

  const snapshot = (): InstanceSnapshot => {
    const report = app.statusReport.report()
    const memory = process.memoryUsage()
    // before the first full window: what the histogram holds so far
    const live = lagMs.max > 0 || lag.count === 0 ? lagMs : { mean: lagOf(lag.mean), p99: lagOf(lag.percentile(99)), max: lagOf(lag.max) }
    return {
      serverId: app.serverId,
      version: report.version,
      status: report.status,
      uptimeSeconds: report.uptimeSeconds,
      connections: app.sessions.size,
      clients: app.sessions.clientCount,
      rooms: app.rooms.stats().active,
      messages: app.messageRate.report(),
      eventLoopLagMs: live,
      memory: { rssBytes: memory.rss, heapUsedBytes: memory.heapUsed },
      redis: (report.redis as { status?: string } | undefined)?.status ?? 'disabled',
      ...(report.problems ? { problems: report.problems } : {})
    }
  }

  const operator = new Operator(app.sessions, app.clusterRequests, app.serverId, snapshot, app.log)
  app.decorate('admin', { enabled: opts.enabled === true, operator })
  // the page at /admin reads it before offering a sign-in form: off, there is nothing to sign in to
  app.statusReport.section('admin', () => ({ enabled: opts.enabled === true }))
  app.addHook('onClose', async () => {
    clearInterval(sample)
    lag.disable()
  })
}, { name: 'admin', fastify: '5.x', dependencies: ['sessions', 'cluster', 'rooms', 'status', 'message-rate'] })

function round (n: number): number {
  return Number.isFinite(n) ? Math.round(n * 100) / 100 : 0
}
