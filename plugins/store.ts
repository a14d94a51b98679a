import fp from 'fastify-plugin'
import type { InboxStore } from './inbox.js'
import { SqliteStore } from './sqlite-store.js'
import { RedisStore } from './redis-store.js'

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
  /** Every stored room. */
  listRooms (): Promise<RoomSummary[]>
  /** A hint that no local member needs the room any more: caches may drop it. */
  release (room: string): void
  /** Resolves when every write requested so far is committed (or has failed). */
  flush (): Promise<void>
  /** Flushes, then closes. */
  close (): Promise<void>
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
}

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
  }
}

export default fp<StoreOptions>(async function store (app, opts) {
  let store: Store
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
  app.decorate('store', store)
  app.statusReport.section('store', () => ({ kind: store.kind }))
  app.addHook('onClose', async () => {
    const started = Date.now()
    await store.close()
    app.log.info({ event: 'shutdown.step', step: 'store_closed', kind: store.kind, ms: Date.now() - started }, 'store closed')
  })
}, { name: 'store', fastify: '5.x', dependencies: ['status', 'metrics'] })
