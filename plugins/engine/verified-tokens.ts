import type { Principal } from '../core/identity.js'

export interface VerifiedTokensOptions {
  /** Tokens remembered at most; past it the oldest entry goes [4096]. */
  maxEntries?: number
  /** How long a verified token is trusted without verifying it again, at most [60000]. */
  maxAgeMs?: number
  /** Seconds of tolerance on `exp` (AUTH_CLOCK_SKEW_S), as the verifiers apply it [0]. */
  clockSkewS?: number
  /** The clock (tests pass their own) [Date.now]. */
  now?: () => number
}

interface Entry { principal: Principal, until: number }

/**
 * Tokens already verified, keyed by the token string: a service that sends
 * the same bearer with every request pays for its signature check and claims
 * once, not per request. Only successful verifications are remembered. An
 * entry never outlives the moment its token stops being accepted (its `exp`
 * plus the clock skew), nor `maxAgeMs`; `clear` forgets every entry (the
 * auth plugin calls it when the public key set changes, so a token whose key
 * was withdrawn is verified again, and refused). Bounded by `maxEntries`,
 * oldest first.
 */
export class VerifiedTokens {
  private readonly entries = new Map<string, Entry>()
  private readonly maxEntries: number
  private readonly maxAgeMs: number
  private readonly skewMs: number
  private readonly now: () => number

  constructor (opts: VerifiedTokensOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 4096
    this.maxAgeMs = opts.maxAgeMs ?? 60000
    this.skewMs = (opts.clockSkewS ?? 0) * 1000
    this.now = opts.now ?? Date.now
  }

  get size (): number {
    return this.entries.size
  }

  /** The principal of a token verified before and still within its entry's life; undefined otherwise (an expired entry is dropped). */
  get (token: string): Principal | undefined {
    const entry = this.entries.get(token)
    if (entry === undefined) return undefined
    if (this.now() < entry.until) return entry.principal
    this.entries.delete(token)
    return undefined
  }

  /** Remembers a token that was just verified, until its `exp` (plus the skew) or `maxAgeMs`, whichever comes first. */
  set (token: string, principal: Principal): void {
    if (this.maxEntries <= 0) return
    const now = this.now()
    const expiresAt = principal.exp === undefined ? Infinity : principal.exp * 1000 + this.skewMs
    const until = Math.min(expiresAt, now + this.maxAgeMs)
    if (until <= now) return
    this.entries.delete(token)
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next()
      if (oldest.done !== true) this.entries.delete(oldest.value)
    }
    this.entries.set(token, { principal, until })
  }

  clear (): void {
    this.entries.clear()
  }
}
