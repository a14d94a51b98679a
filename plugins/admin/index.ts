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
  const lag = monitorEventLoopDelay({ resolution: 20 })
  lag.enable()
  // a recent figure, not one since start: the histogram restarts every 10 seconds
  let lagMs = { mean: 0, p99: 0, max: 0 }
  const sample = setInterval(() => {
    lagMs = { mean: round(lag.mean / 1e6), p99: round(lag.percentile(99) / 1e6), max: round(lag.max / 1e6) }
    lag.reset()
  }, 10000).unref()

  const snapshot = (): InstanceSnapshot => {
    const report = app.statusReport.report()
    const memory = process.memoryUsage()
    const live = { mean: round(lag.mean / 1e6) || lagMs.mean, p99: Math.max(lagMs.p99, round(lag.percentile(99) / 1e6) || 0), max: Math.max(lagMs.max, round(lag.max / 1e6) || 0) }
    return {
      serverId: app.serverId,
      version: report.version,
      status: report.status,
      uptimeSeconds: report.uptimeSeconds,
      connections: app.connections.size,
      clients: app.connections.clientCount,
      rooms: app.rooms.stats().active,
      messages: app.hasDecorator('messageRate') ? app.messageRate.report() : { inPerSecond: 0, outPerSecond: 0, windowSeconds: 0 },
      eventLoopLagMs: live,
      memory: { rssBytes: memory.rss, heapUsedBytes: memory.heapUsed },
      redis: (report.redis as { status?: string } | undefined)?.status ?? 'disabled',
      ...(report.problems ? { problems: report.problems } : {})
    }
  }

  const operator = new Operator(app.connections, app.clusterRequests, app.serverId, snapshot, app.log)
  app.decorate('admin', { enabled: opts.enabled === true, operator })
  app.addHook('onClose', async () => {
    clearInterval(sample)
    lag.disable()
  })
}, { name: 'admin', fastify: '5.x', dependencies: ['connections', 'fanout', 'rooms', 'status'] })

function round (n: number): number {
  return Number.isFinite(n) ? Math.round(n * 100) / 100 : 0
}
