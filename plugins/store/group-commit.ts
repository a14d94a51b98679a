import { StoreUnavailableError } from '../core/errors.js'
import type { BatchTracer } from './interface.js'

/** One write waiting for the next commit. */
export interface PendingWrite {
  run: () => unknown
  /** The caller's trace context, kept only while tracing is on. */
  origin: unknown
  resolve: (value: unknown) => void
  reject: (err: Error) => void
}

export interface GroupCommitOptions {
  /** Batch the writes of one event-loop turn into one commit; false commits each write alone. */
  enabled: boolean
  /** Commits one batch (one transaction); resolves or rejects its writers and returns the failure, if any. */
  commit: (queue: PendingWrite[], dirty: Set<string>) => Error | undefined
  /** The tracer of the moment (set after construction by the store plugin when tracing is on). */
  tracer: () => BatchTracer | undefined
}

/**
 * Group commit: writes requested during one event-loop turn share one
 * transaction and one fsync. Each caller's promise settles with the outcome
 * of the batch its write was in.
 */
export class GroupCommit {
  private queue: PendingWrite[] = []
  private dirty = new Set<string>()
  private scheduled = false
  closed = false

  constructor (private readonly opts: GroupCommitOptions) {}

  /** Whether a write for `room` waits for the next commit. */
  pending (room: string): boolean {
    return this.dirty.has(room)
  }

  enqueue<T> (room: string | null, run: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the store is closed'))
    const done = new Promise<T>((resolve, reject) => {
      this.queue.push({ run, origin: this.opts.tracer()?.capture(), resolve: resolve as (value: unknown) => void, reject })
    })
    if (room !== null) this.dirty.add(room)
    if (!this.opts.enabled) this.commit()
    else if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.commit())
    }
    return done
  }

  /** One transaction for every queued write, then each caller hears the outcome. */
  commit (): void {
    this.scheduled = false
    if (this.queue.length === 0) return
    const queue = this.queue
    const dirty = this.dirty
    this.queue = []
    this.dirty = new Set()
    const tracer = this.opts.tracer()
    if (tracer === undefined) this.opts.commit(queue, dirty)
    else tracer.trace(queue.map(write => write.origin), dirty.size, () => this.opts.commit(queue, dirty))
  }
}
