import type { FastifyBaseLogger, FastifyInstance } from 'fastify'

type ChildLoggerFactory = Parameters<FastifyInstance['setChildLoggerFactory']>[0]

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'
type Bindings = Record<string, unknown>
interface ChildOptions { level?: string, serializers?: unknown }
type LogFn = (...args: unknown[]) => void

/**
 * A request's logger (`request.log`) that becomes pino's child logger only
 * when a line is written at an enabled level. Fastify makes a child per
 * request (its `reqId` binding serialized once per child); at the levels a
 * server runs with, most requests write nothing (`http.request` is at info,
 * refusals at warn): those no longer pay for a child. A line written is the
 * child's, with the same bindings, serializers and redaction.
 */
export class RequestLogger {
  private real: FastifyBaseLogger | undefined

  constructor (private readonly parent: FastifyBaseLogger, private readonly bindingsOf: Bindings, private readonly opts: ChildOptions) {}

  /** The child logger itself, made on first use. */
  child (bindings: Bindings, opts?: ChildOptions): FastifyBaseLogger {
    return this.logger().child(bindings, opts as never)
  }

  get level (): string {
    return this.real?.level ?? this.parent.level
  }

  set level (level: string) {
    this.logger().level = level
  }

  isLevelEnabled (level: string): boolean {
    const of = (this.real ?? this.parent) as { isLevelEnabled?: (level: string) => boolean }
    return of.isLevelEnabled === undefined ? true : of.isLevelEnabled(level)
  }

  bindings (): Bindings {
    const of = this.logger() as { bindings?: () => Bindings }
    return of.bindings === undefined ? this.bindingsOf : of.bindings()
  }

  fatal (...args: unknown[]): void { this.write('fatal', args) }
  error (...args: unknown[]): void { this.write('error', args) }
  warn (...args: unknown[]): void { this.write('warn', args) }
  info (...args: unknown[]): void { this.write('info', args) }
  debug (...args: unknown[]): void { this.write('debug', args) }
  trace (...args: unknown[]): void { this.write('trace', args) }
  silent (): void {}

  private write (level: Level, args: unknown[]): void {
    if (this.real === undefined && !this.isLevelEnabled(level)) return
    const log = this.logger()
    ;(log[level] as LogFn).apply(log, args)
  }

  private logger (): FastifyBaseLogger {
    this.real ??= this.parent.child(this.bindingsOf, this.opts as never)
    return this.real
  }
}

/**
 * Fastify's `childLoggerFactory`: a RequestLogger, or pino's child at once
 * when the route sets its own level or serializers (then the parent cannot say
 * what the child would write).
 */
export const requestLoggerFactory: ChildLoggerFactory = function requestLoggerFactory (logger, bindings, opts) {
  if (opts.level !== undefined || opts.serializers !== undefined) return logger.child(bindings, opts)
  return new RequestLogger(logger, bindings, opts as ChildOptions) as unknown as FastifyBaseLogger
}
