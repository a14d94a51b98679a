import { createHash } from 'node:crypto'
import { stringify } from 'safe-stable-stringify'
import { WsError } from '../../protocol/errors.js'
import { DuplicateKeyError, type IdempotencyClaim, type IdempotencyRecord, type IdempotencyStore } from './interface.js'

export interface IdempotentWritesOptions {
  /** IDEMPOTENCY_TTL_MS: how long a key is remembered [600000]. */
  ttlMs: number
  /** IDEMPOTENCY_MAX_KEYS: keys remembered per owner (the store caps them) [1000]. */
  maxKeys: number
}

/**
 * The owner of a client's keys: its WebSocket frames and its HTTP writes (made
 * as it: `from`, or a user token's sub) share them, so a write whose reply was
 * lost on one transport and sent again on the other is applied once. (The
 * prefix is the one the frames' keys always had, so keys recorded before are
 * still found.)
 */
export function clientKeys (clientId: string): string {
  return `ws:${clientId}`
}

/** What `run` says about a write: its value, and whether it is the first one's (`duplicate`). */
export interface IdempotentOutcome<T> {
  value: T
  duplicate: boolean
}

/**
 * Exactly-once writes keyed by (owner, idempotency key). The first request with
 * a key is applied with its claim, which the store commits in the same
 * transaction or script as the write; a repeat is refused by the store with
 * the first one's record, turned back into its reply. A repeat while the first
 * is still in flight in this process waits for it (WebSocket) or is refused with
 * `idempotency_in_progress` (HTTP). Another body under the same key:
 * `idempotency_conflict`.
 */
export class IdempotentWrites {
  private readonly inflight = new Map<string, { hash: string, done: Promise<unknown> }>()

  constructor (private readonly records: IdempotencyStore, readonly opts: IdempotentWritesOptions) {}

  /** sha256 of the body as canonical JSON (keys sorted), so a repeat with reordered keys is still the same request. */
  hash (body: unknown): string {
    return createHash('sha256').update(stringify(body) ?? 'null').digest('base64url')
  }

  claim (owner: string, key: string, body: unknown, now = Date.now()): IdempotencyClaim {
    return { owner, key, hash: this.hash(body), expiresAt: now + this.opts.ttlMs }
  }

  /**
   * Applies the write once per key. `apply` gets the claim (undefined without a
   * key) and hands it to the store write; `replay` turns a record's result back
   * into the value the first request got.
   */
  async run<T> (owner: string, key: string | undefined, body: unknown, apply: (claim?: IdempotencyClaim) => Promise<T>,
    replay: (result: unknown) => T, concurrent: 'wait' | 'refuse' = 'wait'): Promise<IdempotentOutcome<T>> {
    if (key === undefined) return { value: await apply(undefined), duplicate: false }
    const claim = this.claim(owner, key, body)
    const id = `${owner}\n${key}`
    for (let running = this.inflight.get(id); running !== undefined; running = this.inflight.get(id)) {
      if (running.hash !== claim.hash) throw conflict(key)
      if (concurrent === 'refuse') throw new WsError('idempotency_in_progress', `Idempotency-Key: a request with key ${JSON.stringify(key)} is still in progress; retry when it has finished`)
      // the first one's record is committed when it settles (or nothing was, if it failed)
      await running.done.catch(() => undefined)
    }
    const done = apply(claim).then(value => ({ value, duplicate: false }), (err: unknown) => {
      if (!(err instanceof DuplicateKeyError)) throw err
      return { value: this.replayed(key, claim, err.record, replay), duplicate: true }
    })
    this.inflight.set(id, { hash: claim.hash, done })
    try {
      return await done
    } finally {
      if (this.inflight.get(id)?.done === done) this.inflight.delete(id)
    }
  }

  /** For writes the store does not make (a live direct message, an exec): throws DuplicateKeyError if the key was used. */
  async refuseUsed (claim: IdempotencyClaim): Promise<void> {
    const found = await this.records.recall(claim.owner, claim.key)
    if (found) throw new DuplicateKeyError(found)
  }

  /** Records the result of such a write (not atomic with it: see docs/protocol.md). */
  async remember (claim: IdempotencyClaim, result: unknown): Promise<void> {
    await this.records.remember(claim, result)
  }

  private replayed<T> (key: string, claim: IdempotencyClaim, record: IdempotencyRecord, replay: (result: unknown) => T): T {
    if (record.hash !== claim.hash) throw conflict(key)
    return replay(record.result)
  }
}

function conflict (key: string): WsError {
  return new WsError('idempotency_conflict', `idempotencyKey: ${JSON.stringify(key)} was already used by this client for a request with another body (keys are remembered for IDEMPOTENCY_TTL_MS); nothing was applied`)
}
