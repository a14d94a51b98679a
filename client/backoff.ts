/** Reconnect timing: exponential growth, bounded, with full jitter. */
export interface BackoffOptions {
  /** Ceiling of the first retry's delay [500]. */
  initialDelayMs: number
  /** No retry waits longer than this [10000]. */
  maxDelayMs: number
  /** Growth of the ceiling per failed attempt [2]. */
  factor: number
}

export const defaultBackoff: BackoffOptions = { initialDelayMs: 500, maxDelayMs: 10000, factor: 2 }

/** The upper bound of the delay before retry number `attempt` (0-based). */
export function backoffCeiling (attempt: number, opts: BackoffOptions = defaultBackoff): number {
  return Math.min(opts.maxDelayMs, opts.initialDelayMs * Math.pow(opts.factor, Math.max(0, attempt)))
}

/**
 * "Full jitter": a uniform delay in [0, ceiling), so clients dropped together
 * by one restart do not all come back in the same millisecond.
 */
export function backoffDelay (attempt: number, opts: BackoffOptions = defaultBackoff, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, opts))
}

/**
 * After `server_shutdown`: the server's `reconnectAfterMs`, plus a jitter of up
 * to one initial delay so a whole audience does not return at once.
 */
export function shutdownDelay (reconnectAfterMs: number, opts: BackoffOptions = defaultBackoff, random: () => number = Math.random): number {
  return Math.max(0, reconnectAfterMs) + backoffDelay(0, opts, random)
}
