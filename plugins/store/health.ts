interface HealthLog {
  info (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

export interface StoreHealthOptions {
  /** The same failure is logged at most once per this interval [60000]. */
  logIntervalMs?: number
  /** While writes fail, a probe write is tried this often, so health returns without traffic [5000]. */
  probeIntervalMs?: number
  /** A small real write; throws while the store still cannot write. */
  probe?: () => void
}

/**
 * Whether the store can write, as the last write (or probe) found it. A failed
 * commit makes the instance degraded (/ready 503, /api/status `degraded` with
 * the reason) until a write succeeds again; each distinct failure is logged
 * once per interval, with how many were suppressed, not once per request.
 */
export class StoreHealth {
  private failure: { reason: string, since: number } | null = null
  private readonly logged = new Map<string, { at: number, suppressed: number }>()
  private probeTimer: NodeJS.Timeout | null = null
  private readonly logIntervalMs: number
  private readonly probeIntervalMs: number
  /** Failed and succeeded writes since start, for status. */
  readonly counters = { failedWrites: 0, recoveries: 0 }

  constructor (private readonly log: HealthLog, private readonly opts: StoreHealthOptions = {}) {
    this.logIntervalMs = opts.logIntervalMs ?? 60000
    this.probeIntervalMs = opts.probeIntervalMs ?? 5000
  }

  /** The reason writes fail, or null while they succeed. */
  get problem (): string | null {
    return this.failure?.reason ?? null
  }

  /** A commit failed with `reason` (no room names or data in it: it is what groups log lines). */
  writeFailed (reason: string, fields: Record<string, unknown>): void {
    this.counters.failedWrites++
    const now = Date.now()
    if (this.failure === null) this.failure = { reason, since: now }
    else this.failure.reason = reason
    const seen = this.logged.get(reason)
    if (seen === undefined || now - seen.at >= this.logIntervalMs) {
      this.logged.set(reason, { at: now, suppressed: 0 })
      this.log.error({ event: 'store.batch_failed', reason, suppressed: seen?.suppressed ?? 0, ...fields }, 'a batch of writes could not be committed')
    } else {
      seen.suppressed++
    }
    if (this.probeTimer === null && this.opts.probe !== undefined) {
      this.probeTimer = setInterval(() => this.runProbe(), this.probeIntervalMs)
      this.probeTimer.unref()
    }
  }

  /** A commit succeeded: the store is healthy again (logged once, on the way back). */
  writeSucceeded (): void {
    if (this.failure === null) return
    const { reason, since } = this.failure
    this.failure = null
    this.logged.clear()
    this.counters.recoveries++
    this.stopProbe()
    this.log.info({ event: 'store.recovered', reason, degradedMs: Date.now() - since }, 'the store accepts writes again')
  }

  stopProbe (): void {
    if (this.probeTimer !== null) clearInterval(this.probeTimer)
    this.probeTimer = null
  }

  private runProbe (): void {
    try {
      this.opts.probe?.()
    } catch (err) {
      // the failure is known and already logged; the next probe tries again
      const reason = storeFailureReason(err)
      if (this.failure !== null) this.failure.reason = reason
      return
    }
    this.writeSucceeded()
  }
}

/** A store error as an operator reads it: the SQLite code (SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR_*) and its text. */
export function storeFailureReason (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  const message = err instanceof Error ? err.message : String(err)
  return typeof code === 'string' && code !== '' && !message.includes(code) ? `${code}: ${message}` : message
}
