import type { DirectMessage } from '../../protocol/frames.js'
import type { DocumentStore } from './documents.js'
import type { LastEventStore } from './last-events.js'
import type { OutboxStore } from './outbox.js'
export type { DocumentStore, StoredDocument } from './documents.js'
export type { LastEventStore } from './last-events.js'
export type { OutboxStore } from './outbox.js'

export { StoreUnavailableError } from '../core/errors.js'
import type { BatchTracer } from '../observability/tracing.js'
export type { BatchTracer }

export { InvalidPatchError, type RoomState } from '../../protocol/merge-patch.js'
import type { RoomState } from '../../protocol/merge-patch.js'

/** A published room message, as it is broadcast and as history keeps it. */
export interface RoomMessage {
  type: 'room_message'
  room: string
  offset: number
  messageId: string
  from: string
  data: unknown
  timestamp: string
  /** The room's epoch (see RoomSnapshot.epoch). */
  epoch: string
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
  /**
   * Random, chosen when the room's history starts (its first write in this
   * store): offsets count within it, so a replaced store or a flushed Redis
   * gives the room a new one.
   */
  epoch: string
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
  /** Commit this idempotency record with the patch (its result: `{ version }`). */
  claim?: IdempotencyClaim
}

export interface PatchResult {
  version: number
  state: RoomState
  /** The room's epoch (versions count within it). */
  epoch?: string
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

/**
 * An idempotency key handed to a write: the store commits the record in the
 * same transaction (SQLite) or script (Redis) as the write, or refuses the
 * write with DuplicateKeyError when the owner already used the key.
 */
export interface IdempotencyClaim {
  /** Whose keys these are: `ws:<clientId>` or `http:<clientKey>`. */
  owner: string
  key: string
  /** A hash of the request's body: a repeat with another body is a conflict. */
  hash: string
  /** When the record lapses, in ms since the epoch. */
  expiresAt: number
  /** The result to record when the write's own result does not say it (inbox pushes). */
  result?: unknown
}

/** What a key remembers: the body's hash and the write's result. */
export interface IdempotencyRecord {
  hash: string
  result: unknown
}

/** The owner already used the key (unexpired): nothing was written; `record` is the first write's. */
export class DuplicateKeyError extends Error {
  override name = 'DuplicateKeyError'
  constructor (readonly record: IdempotencyRecord) {
    super('the idempotency key was already used')
  }
}

/** The records of idempotency keys, capped per owner (the oldest go first) and expiring at `expiresAt`. */
export interface IdempotencyStore {
  /** The owner's unexpired record of `key`, or null. */
  recall (owner: string, key: string): Promise<IdempotencyRecord | null>
  /** Writes (or replaces) a record on its own, for writes that are not store writes (a live direct message, an exec). */
  remember (claim: IdempotencyClaim, result: unknown): Promise<void>
  /** Drops expired records everywhere; returns how many (Redis expires them itself: 0). */
  expire (now?: number): Promise<number>
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
  /** Idempotency records of writes. */
  readonly idempotency: IdempotencyStore
  /** Yjs documents (snapshot and update log), committed like every other write. */
  readonly documents: DocumentStore
  /** The last event of channels that keep one (Pusher cache channels), expiring. */
  readonly lastEvents: LastEventStore
  /** Requests waiting to be delivered (webhook batches), kept across restarts. */
  readonly outbox: OutboxStore
  /** Wraps each committed batch in a span (set by the store plugin itself when tracing is on). */
  batchTracer?: BatchTracer

  /** The committed room, or null for a room never published to nor patched. */
  loadRoom (room: string): Promise<RoomSnapshot | null>
  /** Like loadRoom, plus the messages after `since`, read atomically with the snapshot. */
  loadRoomSince (room: string, since: number): Promise<RoomSnapshotWithHistory | null>
  /**
   * Appends a message with the next offset and trims history to `historySize`;
   * with a claim, commits its record (result `{ offset, messageId }`) with it.
   */
  appendMessage (room: string, message: NewRoomMessage, historySize: number, claim?: IdempotencyClaim): Promise<RoomMessage>
  /** Applies an RFC 7396 merge patch; throws VersionConflictError, StateTooLargeError, InvalidPatchError. */
  applyPatch (room: string, patch: RoomState, opts: PatchOptions): Promise<PatchResult>
  /** Removes the room's message history (state, version and offsets stay); resolves once committed. */
  clearHistory (room: string): Promise<void>
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

/** Messages for offline clients, kept by the store (`app.store.inbox`) so they survive restarts. */
export interface InboxStore {
  /** With a claim, its record (result `claim.result`) commits with the message. */
  push (clientId: string, message: DirectMessage, claim?: IdempotencyClaim): Promise<void>
  /** Removes and returns the client's unexpired messages, oldest first. */
  drain (clientId: string): Promise<DirectMessage[]>
  /** Drops expired messages everywhere; returns how many. */
  expire (now?: number): Promise<number>
}
