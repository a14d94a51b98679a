import fp from 'fastify-plugin'

export interface StatusOptions {
  /** Reported as `version` [the package version]. */
  version?: string
}

type Section = () => unknown
/** Returns a reason string when the instance is not fit to serve, or null. */
type HealthCheck = () => string | null

/**
 * Collects `/api/status` from the plugins that own each part, so the status
 * route knows nothing about rooms, Redis or limits.
 */
export class StatusReport {
  private readonly sections = new Map<string, Section[]>()
  private readonly checks = new Map<string, HealthCheck>()
  private readonly startedAt = Date.now()
  private closing = false

  constructor (readonly version: string) {}

  /** Whether the server is closing: `/ready` answers 503 and the status says `shutting_down`. */
  get shuttingDown (): boolean {
    return this.closing
  }

  /** Called by whoever starts the shutdown (the shutdown plugin's preClose hook); there is no way back. */
  beginShutdown (): void {
    this.closing = true
  }

  /**
   * Adds a top-level field of the status body, written by the plugin that owns
   * it. Several owners of one field (the connection registry and the limits)
   * each add their part: object parts are merged, in registration order.
   */
  section (name: string, fn: Section): void {
    const parts = this.sections.get(name)
    if (parts) parts.push(fn)
    else this.sections.set(name, [fn])
  }

  /** A failing check makes the status `degraded` and `/ready` answer 503. */
  check (name: string, fn: HealthCheck): void {
    this.checks.set(name, fn)
  }

  problems (): string[] {
    const out: string[] = []
    for (const [name, fn] of this.checks) {
      const reason = fn()
      if (reason) out.push(`${name}: ${reason}`)
    }
    return out
  }

  report (): Record<string, unknown> {
    const problems = this.problems()
    const body: Record<string, unknown> = {
      status: this.shuttingDown ? 'shutting_down' : problems.length > 0 ? 'degraded' : 'ok',
      version: this.version,
      uptimeSeconds: Math.floor((Date.now() - this.startedAt) / 1000)
    }
    for (const [name, parts] of this.sections) {
      body[name] = parts.length === 1 ? parts[0]() : Object.assign({}, ...parts.map(fn => fn()))
    }
    if (problems.length > 0) body.problems = problems
    return body
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    statusReport: StatusReport
  }
}

export default fp<StatusOptions>(async function status (app, opts) {
  app.decorate('statusReport', new StatusReport(opts.version ?? '1.0.0'))
}, { name: 'status', fastify: '5.x' })
