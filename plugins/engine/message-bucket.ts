/**
 * The per-connection message rate (WS_MESSAGES_PER_SECOND), shared by every
 * protocol on the port: a token bucket of `rate` per second holding `burst`,
 * and how long the connection has been over it. A frame over the rate is
 * refused ('limited'); a connection over it for `floodCloseMs` is to be
 * closed ('flood'). What a refusal and a close look like is the protocol's.
 */
export class MessageBucket {
  private tokens: number
  private refilledAt: number
  private floodSince = 0
  private lastViolation = 0

  constructor (readonly rate: number, readonly burst: number, readonly floodCloseMs: number, now = Date.now()) {
    this.tokens = burst
    this.refilledAt = now
  }

  take (now = Date.now()): 'ok' | 'limited' | 'flood' {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) / 1000) * this.rate)
    this.refilledAt = now
    if (this.tokens >= 1) {
      this.tokens -= 1
      return 'ok'
    }
    // violations less than a second apart are one flood
    if (now - this.lastViolation > 1000) this.floodSince = now
    this.lastViolation = now
    return now - this.floodSince >= this.floodCloseMs ? 'flood' : 'limited'
  }
}
