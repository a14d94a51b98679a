import fp from 'fastify-plugin'
import type { InboxStore } from '../messages/inbox.js'
import { SqliteStore } from './sqlite.js'
import { RedisStore } from './redis.js'

/** A room's JSON state: always an object at the top level. */
export type RoomState = Record<string, unknown>

/** A published room message, as it is broadcast and as history keeps it. */
export interface RoomMessage {
  type: 'room_message'
  room: string
  offset: number
  messageId: string
  from: string
  data: unknown
  timestamp: string
}

/** What a caller hands to `appendMessage`; the store assigns the offset. */
export interface NewRoomMessage {
  messageId: string
  from: string
  data: unknown
  timestamp: string
}

/** A room as committed in the store. */
export interface RoomSnapshot {
  room: string
  state: RoomState
  /** Grows by 1 with each state change; 0 for a room whose state was never patched. */
  version: number
  /** The offset of the last room_message; 0 before the first. */
  offset: number
}

/** A snapshot plus the messages after `since`, read at the same instant. */
export interface RoomSnapshotWithHistory extends RoomSnapshot {
  /** Messages with offset > since, oldest first (at most the history size). */
  missed: RoomMessage[]
  /** True when `missed` holds every message after `since`. */
  complete: boolean
}

export interface PatchOptions {
  /** When set, the patch applies only if the room is at this version. */
  baseVersion?: number
  /** The largest the serialized state may become, in bytes. */
  maxBytes: number
}

export interface PatchResult {
  version: number
  state: RoomState
}

export interface RoomSummary {
  room: string
  version: number
  offset: number
}

/** One page of the stored rooms in name order (keyset pagination on the store's ordered index). */
export interface RoomPage {
  /** Only names after this one (the last name of the previous page). */
  after?: string
  /** Only names starting with this. */
  prefix?: string
  /** At most this many. */
  limit: number
}

/** Above every room name (names are ASCII below 0x7f): `prefix + ROOM_NAME_END` bounds a prefix range. */
export const ROOM_NAME_END = '\x7f'

/** The room is not at the version the caller based its patch on. */
export class VersionConflictError extends Error {
  override name = 'VersionConflictError'
  constructor (readonly room: string, readonly currentVersion: number, readonly baseVersion: number) {
    super(`room ${room} is at version ${currentVersion}, not ${baseVersion}`)
  }
}

/** The patched state would exceed the configured size. */
export class StateTooLargeError extends Error {
  override name = 'StateTooLargeError'
  constructor (readonly room: string, readonly bytes: number, readonly maxBytes: number) {
    super(`the state of room ${room} would be ${bytes} bytes, more than the limit of ${maxBytes}`)
  }
}

/** The patch itself is unusable (not an object, or a forbidden key). */
export class InvalidPatchError extends Error {
  override name = 'InvalidPatchError'
}

/** The store could not read or commit; the caller may retry. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError'
  /** True when the failure was already logged (by StoreHealth): callers need not log it again. */
  reported = false
}

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

/** Traces store commits (installed by the tracing plugin; absent, commits run bare). */
export interface BatchTracer {
  /** Called as a write is queued: the caller's trace context, handed back to `trace`. */
  capture (): unknown
  /** Runs the commit of one batch in a span; `origins` are the captured contexts of its writes, in order. */
  trace (origins: unknown[], rooms: number, commit: () => Error | undefined): void
}

/**
 * The one storage interface the rest of the code uses. Operations are
 * whole (append, patch), so each implementation assigns offsets and versions
 * atomically itself: SQLite from its in-process head, Redis in a script.
 * The store plugin picks Redis when the redis plugin has a connection (REDIS_URL), SQLite otherwise.
 * Every returned promise resolves only after the change is committed.
 */
export interface Store {
  /** `sqlite` or `redis`, for status and logs. */
  readonly kind: string
  /** Queued direct messages for offline clients. */
  readonly inbox: InboxStore
  /** Wraps each committed batch in a span (set by the store plugin itself when tracing is on). */
  batchTracer?: BatchTracer

  /** The committed room, or null for a room never published to nor patched. */
  loadRoom (room: string): Promise<RoomSnapshot | null>
  /** Like loadRoom, plus the messages after `since`, read atomically with the snapshot. */
  loadRoomSince (room: string, since: number): Promise<RoomSnapshotWithHistory | null>
  /** Appends a message with the next offset and trims history to `historySize`. */
  appendMessage (room: string, message: NewRoomMessage, historySize: number): Promise<RoomMessage>
  /** Applies an RFC 7396 merge patch; throws VersionConflictError, StateTooLargeError, InvalidPatchError. */
  applyPatch (room: string, patch: RoomState, opts: PatchOptions): Promise<PatchResult>
  /** Every stored room or, given a page, at most `limit` of them in name order, read from an ordered index. */
  listRooms (page?: RoomPage): Promise<RoomSummary[]>
  /** A hint that no local member needs the room any more: caches may drop it. */
  release (room: string): void
  /** Resolves when every write requested so far is committed (or has failed). */
  flush (): Promise<void>
  /** Flushes, then closes. */
  close (): Promise<void>
  /** A small real write, for StoreHealth's probe while writes fail (absent: only traffic finds the way back). */
  probeWrite? (): void
}

export interface StoreOptions {
  /** Directory of the SQLite database, created if missing [./data]. */
  dataDir?: string
  /** Batch the writes of one event-loop turn into one transaction [true]. */
  groupCommit?: boolean
  /** Queued direct messages kept per offline client [100]. */
  inboxMax?: number
  /** How long a queued direct message waits [86400000]. */
  inboxTtlMs?: number
  /** While writes fail, how often a probe write checks whether they work again [5000]. */
  probeIntervalMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
    /** Whether the store can write (SQLite; a Redis outage is the redis plugin's health check). */
    storeHealth: StoreHealth
  }
}

export default fp<StoreOptions>(async function store (app, opts) {
  let store: Store | undefined
  const health = new StoreHealth(app.log, { probeIntervalMs: opts.probeIntervalMs, probe: () => store?.probeWrite?.() })
  const link = app.hasDecorator('redisLink') ? app.redisLink : null
  if (link) {
    // REDIS_URL is set: Redis holds rooms and inboxes for every instance
    store = new RedisStore(link.commands, {
      inboxMax: opts.inboxMax ?? 100,
      inboxTtlMs: opts.inboxTtlMs ?? 86400000,
      requireReady: () => link.requireReady()
    })
    app.log.info({ event: 'store.opened', kind: 'redis' }, 'store opened')
  } else {
    try {
      store = SqliteStore.open({
        dataDir: opts.dataDir ?? './data',
        groupCommit: opts.groupCommit ?? true,
        inboxMax: opts.inboxMax ?? 100,
        inboxTtlMs: opts.inboxTtlMs ?? 86400000,
        log: app.log,
        health,
        onCommit: (writes, seconds) => {
          app.metrics.storeBatchSize.observe({ store: 'sqlite' }, writes)
          app.metrics.storeWriteSeconds.observe({ store: 'sqlite' }, seconds)
        }
      })
    } catch (err) {
      app.log.fatal({ event: 'store.open_failed', reason: (err as Error).message }, 'the store cannot be used; refusing to start')
      throw err
    }
  }
  // tracing registers first: when on, each committed batch gets a span
  if (app.hasDecorator('tracing')) store.batchTracer = app.tracing.batchTracer?.(store.kind)
  const opened: Store = store
  app.decorate('store', opened)
  app.decorate('storeHealth', health)
  app.statusReport.section('store', () => ({ kind: opened.kind, writable: health.problem === null, ...(health.problem === null ? {} : { reason: health.problem }) }))
  app.statusReport.check('store', () => health.problem === null ? null : `writes fail: ${health.problem}`)
  app.addHook('onClose', async () => {
    const started = Date.now()
    health.stopProbe()
    await opened.close()
    app.log.info({ event: 'shutdown.step', step: 'store_closed', kind: opened.kind, ms: Date.now() - started }, 'store closed')
  })
}, { name: 'store', fastify: '5.x', dependencies: ['status', 'metrics'] })
