import Database from 'better-sqlite3'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { DATABASE_FILE, StoreLock, StoreOpenError } from './lock.js'
import { migrate, schemaVersion } from './migrations.js'
import { GroupCommit, type PendingWrite } from './group-commit.js'

export { DATABASE_FILE, LOCK_FILE, PID_FILE, StoreLock, StoreOpenError } from './lock.js'
export { MIGRATIONS } from './migrations.js'
import type { DirectMessage } from '../../protocol/frames.js'
import { parseState, patchedState, recoveryWindow } from './room-state.js'
import {
  StoreUnavailableError, VersionConflictError, type InboxStore,
  type NewRoomMessage, type PatchOptions, type PatchResult, type RoomMessage, type RoomSnapshot,
  ROOM_NAME_END, type RoomPage, type BatchTracer, type RoomSnapshotWithHistory, type RoomState, type RoomSummary, type Store
} from './interface.js'
import { storeFailureReason, type StoreHealth } from './health.js'
import { DuplicateKeyError, type IdempotencyClaim, type IdempotencyRecord, type IdempotencyStore } from './interface.js'
import { newEpoch } from './room-state.js'
import type { DocumentStore, LastEventStore, OutboxStore, StoredDocument } from './interface.js'

interface Log {
  info (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

export interface SqliteStoreOptions {
  dataDir: string
  groupCommit: boolean
  inboxMax: number
  inboxTtlMs: number
  /** Idempotency keys kept per owner; the oldest go first [1000]. */
  idempotencyMaxKeys?: number
  log: Log
  /** Told of every failed and succeeded commit (degraded status, one log line per failure and interval). */
  health?: StoreHealth
  /** Told the size and duration of every committed batch (metrics). */
  onCommit?: (writes: number, seconds: number) => void
}

/** The database file inside DATA_DIR. */
/** A room as this process knows it: the latest head (pending writes included) and the committed one. */
interface Head {
  state: RoomState
  stateJson: string
  version: number
  offset: number
  epoch: string
  committed: RoomSnapshot | null
}

interface RoomRow { state: string, version: number, offset: number, epoch: string | null }
interface MessageRow { offset: number, message_id: string, sender: string, data: string, timestamp: string }

/**
 * The embedded store: one SQLite file in WAL mode with synchronous=FULL, so a
 * commit is on disk (not only in the OS cache) before its promise resolves and
 * an ack survives kill -9 and power loss alike. Group commit makes that cheap:
 * writes requested during one event-loop turn share one transaction and one fsync.
 */
export class SqliteStore implements Store {
  readonly kind = 'sqlite'
  readonly inbox: InboxStore
  readonly idempotency: IdempotencyStore
  readonly documents: DocumentStore
  readonly lastEvents: LastEventStore
  readonly outbox: OutboxStore
  readonly path: string
  /** Counters for status and the benchmark. */
  readonly counters = { commits: 0, writes: 0, failedCommits: 0 }
  batchTracer?: BatchTracer

  private readonly heads = new Map<string, Head>()
  /** Idempotency records per owner, as far as counted (a bound, never less than the truth): past the cap the oldest go. */
  private readonly keyCounts = new Map<string, number>()
  private readonly writes: GroupCommit
  private readonly statements
  /** Per room written in the batch being committed: its history keeps the offsets above this. */
  private trims = new Map<string, number>()
  /** One batch as one transaction (better-sqlite3's wrapper, built once). */
  private readonly transaction: (queue: PendingWrite[], dirty: Set<string>, now: string) => unknown[]

  private constructor (readonly db: Database.Database, private readonly opts: SqliteStoreOptions, private readonly lock: StoreLock) {
    this.path = db.name
    this.statements = {
      room: db.prepare<[string], RoomRow>(`SELECT r.state, r.version, MAX(r."offset", COALESCE(o."offset", 0)) AS "offset", r.epoch
        FROM rooms r LEFT JOIN room_offsets o ON o.room = r.room WHERE r.room = ?`),
      rooms: db.prepare<[], RoomSummary>(`SELECT r.room, r.version, MAX(r."offset", COALESCE(o."offset", 0)) AS "offset"
        FROM rooms r LEFT JOIN room_offsets o ON o.room = r.room ORDER BY r.room`),
      // a range of the primary key: as cheap with 50 rooms as with 50 million
      roomsPage: db.prepare<[string, string, string, number], RoomSummary>(`SELECT r.room, r.version, MAX(r."offset", COALESCE(o."offset", 0)) AS "offset"
        FROM rooms r LEFT JOIN room_offsets o ON o.room = r.room WHERE r.room > ? AND r.room >= ? AND r.room < ? ORDER BY r.room LIMIT ?`),
      // the epoch is written with the room's first row and never changed by a later write
      saveRoom: db.prepare(`INSERT INTO rooms (room, state, version, "offset", updated_at, epoch) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (room) DO UPDATE SET state = excluded.state, version = excluded.version, "offset" = excluded."offset", updated_at = excluded.updated_at`),
      saveOffset: db.prepare(`INSERT INTO room_offsets (room, "offset") VALUES (?, ?)
        ON CONFLICT (room) DO UPDATE SET "offset" = excluded."offset"`),
      addMessage: db.prepare('INSERT INTO room_messages (room, "offset", message_id, sender, data, timestamp) VALUES (?, ?, ?, ?, ?, ?)'),
      trimMessages: db.prepare('DELETE FROM room_messages WHERE room = ? AND "offset" <= ?'),
      clearMessages: db.prepare('DELETE FROM room_messages WHERE room = ?'),
      messagesAfter: db.prepare<[string, number, number], MessageRow>('SELECT "offset" AS "offset", message_id, sender, data, timestamp FROM room_messages WHERE room = ? AND "offset" > ? AND "offset" <= ? ORDER BY "offset"'),
      inboxPush: db.prepare('INSERT INTO inbox (client_id, message, expires_at) VALUES (?, ?, ?)'),
      inboxTrim: db.prepare('DELETE FROM inbox WHERE client_id = ? AND id NOT IN (SELECT id FROM inbox WHERE client_id = ? ORDER BY id DESC LIMIT ?)'),
      inboxRead: db.prepare<[string, number], { message: string }>('SELECT message FROM inbox WHERE client_id = ? AND expires_at > ? ORDER BY id'),
      inboxClear: db.prepare('DELETE FROM inbox WHERE client_id = ?'),
      inboxExpire: db.prepare('DELETE FROM inbox WHERE expires_at <= ?'),
      keyRead: db.prepare<[string, string, number], { hash: string, result: string }>('SELECT hash, result FROM idempotency_keys WHERE owner = ? AND key = ? AND expires_at > ?'),
      keyInsert: db.prepare('INSERT OR IGNORE INTO idempotency_keys (owner, key, hash, result, expires_at) VALUES (?, ?, ?, ?, ?)'),
      keyReplace: db.prepare('UPDATE idempotency_keys SET hash = ?, result = ?, expires_at = ? WHERE owner = ? AND key = ?'),
      keyCount: db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM idempotency_keys WHERE owner = ?'),
      // the owner's oldest records, read from the (owner, expires_at) index: O(log n) per write at the cap
      keyTrim: db.prepare(`DELETE FROM idempotency_keys WHERE owner = ? AND key IN (
        SELECT key FROM idempotency_keys WHERE owner = ? ORDER BY expires_at LIMIT ?)`),
      keyExpire: db.prepare('DELETE FROM idempotency_keys WHERE expires_at <= ?'),
      docSnapshot: db.prepare<[string], { data: Buffer }>('SELECT data FROM ydoc_snapshot WHERE name = ?'),
      docUpdates: db.prepare<[string], { id: number, data: Buffer }>('SELECT id, data FROM ydoc_update WHERE name = ? ORDER BY id'),
      docAppend: db.prepare('INSERT INTO ydoc_update (name, data) VALUES (?, ?)'),
      docSaveSnapshot: db.prepare(`INSERT INTO ydoc_snapshot (name, data, up_to) VALUES (?, ?, ?)
        ON CONFLICT (name) DO UPDATE SET data = excluded.data, up_to = excluded.up_to`),
      docDropUpdates: db.prepare('DELETE FROM ydoc_update WHERE name = ? AND id <= ?'),
      lastRead: db.prepare<[string, string, number], { value: string }>('SELECT value FROM last_events WHERE ns = ? AND name = ? AND expires_at > ?'),
      lastWrite: db.prepare(`INSERT INTO last_events (ns, name, value, expires_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (ns, name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`),
      lastExpire: db.prepare('DELETE FROM last_events WHERE expires_at <= ?'),
      outboxPut: db.prepare('INSERT OR REPLACE INTO outbox (ns, id, value, owner, created_at) VALUES (?, ?, ?, ?, ?)'),
      outboxRemove: db.prepare('DELETE FROM outbox WHERE ns = ? AND id = ?'),
      outboxOthers: db.prepare<[string, string], { id: string, value: string }>('SELECT id, value FROM outbox WHERE ns = ? AND owner != ? ORDER BY created_at'),
      outboxTake: db.prepare('UPDATE outbox SET owner = ? WHERE ns = ? AND owner != ?')
    }
    this.inbox = this.createInbox()
    this.idempotency = this.createIdempotency()
    this.documents = this.createDocuments()
    this.lastEvents = this.createLastEvents()
    this.outbox = this.createOutbox()
    this.transaction = db.transaction((queue: PendingWrite[], dirty: Set<string>, now: string) => {
      this.trims = new Map()
      const out = queue.map(write => write.run())
      for (const [room, upTo] of this.trims) this.statements.trimMessages.run(room, upTo)
      for (const room of dirty) {
        const head = this.heads.get(room) as Head
        // the state (up to ROOM_STATE_MAX_BYTES) is written only when it changed: a publish moves the offset alone
        if (head.committed === null || head.committed.version !== head.version) {
          this.statements.saveRoom.run(room, head.stateJson, head.version, head.offset, now, head.epoch)
        } else if (head.committed.offset !== head.offset) {
          this.statements.saveOffset.run(room, head.offset)
        }
      }
      return out
    })
    this.writes = new GroupCommit({ enabled: opts.groupCommit, commit: (queue, dirty) => this.commitBatch(queue, dirty), tracer: () => this.batchTracer })
  }

  /** Opens (creating) DATA_DIR/switchboard.db, checks its integrity and migrates it. */
  static open (opts: SqliteStoreOptions): SqliteStore {
    const dir = resolve(opts.dataDir)
    const file = join(dir, DATABASE_FILE)
    let db: Database.Database
    try {
      mkdirSync(dir, { recursive: true })
    } catch (err) {
      throw new StoreOpenError(`cannot open the SQLite store at ${file}: ${(err as Error).message}`)
    }
    const lock = StoreLock.acquire(dir)
    try {
      db = new Database(file)
    } catch (err) {
      lock.release()
      throw new StoreOpenError(`cannot open the SQLite store at ${file}: ${(err as Error).message}`)
    }
    try {
      db.pragma('journal_mode = WAL')
      db.pragma('synchronous = FULL')
      db.pragma('busy_timeout = 5000')
      const integrity = db.pragma('integrity_check', { simple: true })
      if (integrity !== 'ok') throw new StoreOpenError(`the SQLite store at ${file} failed PRAGMA integrity_check: ${String(integrity)}`)
      const applied = migrate(db)
      if (applied.length > 0) opts.log.info({ event: 'store.migrated', file, applied }, 'applied schema migrations')
      importLegacyDocuments(db, dir, opts.log)
    } catch (err) {
      db.close()
      lock.release()
      if (err instanceof StoreOpenError) throw err
      throw new StoreOpenError(`cannot use the SQLite store at ${file}: ${(err as Error).message}`)
    }
    opts.log.info({ event: 'store.opened', kind: 'sqlite', file, groupCommit: opts.groupCommit, schemaVersion: schemaVersion(db) }, 'store opened')
    return new SqliteStore(db, opts, lock)
  }

  async loadRoom (room: string): Promise<RoomSnapshot | null> {
    return this.head(room, false)?.committed ?? null
  }

  async loadRoomSince (room: string, since: number): Promise<RoomSnapshotWithHistory | null> {
    const snapshot = this.head(room, false)?.committed
    if (!snapshot) return null
    return recoveryWindow(snapshot, since, from => this.read(() => this.statements.messagesAfter.all(room, from, snapshot.offset)).map(row => toMessage(room, row, snapshot.epoch)))
  }

  async appendMessage (room: string, message: NewRoomMessage, historySize: number, claim?: IdempotencyClaim): Promise<RoomMessage> {
    if (claim) this.refuseDuplicate(claim)
    const head = this.writableHead(room)
    const offset = ++head.offset
    const stored: RoomMessage = { type: 'room_message', room, offset, ...message, epoch: head.epoch }
    const data = JSON.stringify(message.data ?? null)
    return this.enqueue(room, () => {
      if (historySize > 0) this.statements.addMessage.run(room, offset, message.messageId, message.from, data, message.timestamp)
      // the history is trimmed once per room per batch (in the batch's transaction), not once per message
      const trimmed = this.trims.get(room)
      if (trimmed === undefined || trimmed < offset - historySize) this.trims.set(room, offset - historySize)
      if (claim) this.writeKey(claim, `{"offset":${offset},"messageId":${JSON.stringify(message.messageId)}}`)
      return stored
    })
  }

  async clearHistory (room: string): Promise<void> {
    if (this.writes.closed) throw new StoreUnavailableError('the store is closed')
    // not a room write: the room's row (state, offset) stays as it is, and a room never used is not created
    return this.enqueue(null, () => { this.statements.clearMessages.run(room) })
  }

  async applyPatch (room: string, patch: RoomState, opts: PatchOptions): Promise<PatchResult> {
    if (opts.claim) this.refuseDuplicate(opts.claim)
    const head = this.writableHead(room)
    if (opts.baseVersion !== undefined && opts.baseVersion !== head.version) {
      throw new VersionConflictError(room, head.version, opts.baseVersion)
    }
    const { state, json } = patchedState(room, head.state, patch, opts.maxBytes)
    head.state = state
    head.stateJson = json
    const version = ++head.version
    const claim = opts.claim
    const epoch = head.epoch
    return this.enqueue(room, () => {
      if (claim) this.writeKey(claim, `{"version":${version}}`)
      return { version, state, epoch }
    })
  }

  async listRooms (page?: RoomPage): Promise<RoomSummary[]> {
    if (page === undefined) return this.read(() => this.statements.rooms.all())
    const prefix = page.prefix ?? ''
    return this.read(() => this.statements.roomsPage.all(page.after ?? '', prefix, prefix + ROOM_NAME_END, page.limit))
  }

  release (room: string): void {
    if (!this.writes.pending(room)) this.heads.delete(room)
  }

  /**
   * A write that needs new pages (a few KB, written then deleted in one
   * transaction): it fails with SQLITE_FULL while the disk (or max_page_count)
   * is full, SQLITE_READONLY or SQLITE_IOERR while those last.
   */
  probeWrite (): void {
    if (this.writes.closed) return
    this.db.transaction(() => {
      this.db.prepare('INSERT INTO store_probe (data) VALUES (zeroblob(16384))').run()
      this.db.prepare('DELETE FROM store_probe').run()
    })()
  }

  /** Commits every pending write now, in one transaction. */
  async flush (): Promise<void> {
    this.writes.commit()
  }

  async close (): Promise<void> {
    if (this.writes.closed) return
    this.writes.commit()
    this.writes.closed = true
    this.heads.clear()
    this.db.close()
    this.lock.release()
  }

  /** The head of a room, read from the database once and then kept. */
  private head (room: string, create: boolean): Head | undefined {
    const cached = this.heads.get(room)
    if (cached) return cached
    const row = this.read(() => this.statements.room.get(room))
    if (!row && !create) return undefined
    let head: Head
    if (row) {
      const state = parseState(room, row.state)
      // a room stored before migration 5 ran always has one; null only if a row was written around it
      const epoch = row.epoch ?? newEpoch()
      head = { state, stateJson: row.state, version: row.version, offset: row.offset, epoch, committed: { room, state, version: row.version, offset: row.offset, epoch } }
    } else {
      head = { state: {}, stateJson: '{}', version: 0, offset: 0, epoch: newEpoch(), committed: null }
    }
    this.heads.set(room, head)
    return head
  }

  private writableHead (room: string): Head {
    if (this.writes.closed) throw new StoreUnavailableError('the store is closed')
    return this.head(room, true) as Head
  }

  private read<T> (fn: () => T): T {
    if (this.writes.closed) throw new StoreUnavailableError('the store is closed')
    try {
      return fn()
    } catch (err) {
      throw new StoreUnavailableError(`the store could not be read: ${(err as Error).message}`)
    }
  }

  private enqueue<T> (room: string | null, run: () => T): Promise<T> {
    return this.writes.enqueue(room, run)
  }

  /** Commits one batch; resolves or rejects its writers and returns the failure, if any. */
  private commitBatch (queue: PendingWrite[], dirty: Set<string>): Error | undefined {
    const now = new Date().toISOString()
    const started = process.hrtime.bigint()
    let results: unknown[]
    try {
      results = this.transaction(queue, dirty, now)
    } catch (err) {
      // what this process believed about these rooms was never committed: forget it
      for (const room of dirty) this.heads.delete(room)
      this.keyCounts.clear()
      this.counters.failedCommits++
      const reason = storeFailureReason(err)
      const failure = new StoreUnavailableError(`the store could not commit (${reason})`)
      if (this.opts.health) {
        this.opts.health.writeFailed(reason, { writes: queue.length, rooms: dirty.size })
        failure.reported = true
      } else {
        this.opts.log.error({ event: 'store.batch_failed', reason, writes: queue.length, rooms: dirty.size }, 'a batch of writes could not be committed')
      }
      for (const write of queue) write.reject(failure)
      return failure
    }
    this.opts.health?.writeSucceeded()
    for (const room of dirty) {
      const head = this.heads.get(room) as Head
      head.committed = { room, state: head.state, version: head.version, offset: head.offset, epoch: head.epoch }
    }
    this.counters.commits++
    this.counters.writes += queue.length
    this.opts.onCommit?.(queue.length, Number(process.hrtime.bigint() - started) / 1e9)
    queue.forEach((write, i) => write.resolve(results[i]))
    return undefined
  }

  /** Throws DuplicateKeyError when the owner's key has an unexpired record (a repeat in this process waits in IdempotentWrites first). */
  private refuseDuplicate (claim: IdempotencyClaim): void {
    const row = this.read(() => this.statements.keyRead.get(claim.owner, claim.key, Date.now()))
    if (row) throw new DuplicateKeyError({ hash: row.hash, result: JSON.parse(row.result) })
  }

  /** Inside a transaction: the record, and past the owner's cap the oldest records go. */
  private writeKey (claim: IdempotencyClaim, resultJson: string): void {
    const s = this.statements
    if (s.keyInsert.run(claim.owner, claim.key, claim.hash, resultJson, claim.expiresAt).changes === 0) {
      // an expired record of the key, or the full response of a write recorded with it (HTTP): same count
      s.keyReplace.run(claim.hash, resultJson, claim.expiresAt, claim.owner, claim.key)
      return
    }
    const max = this.opts.idempotencyMaxKeys ?? 1000
    const counted = this.keyCounts.get(claim.owner)
    // counted from the table once per owner, then kept here (this process is the only writer)
    const count = counted === undefined ? s.keyCount.get(claim.owner)?.n ?? 1 : counted + 1
    if (count > max) s.keyTrim.run(claim.owner, claim.owner, count - max)
    this.keyCounts.set(claim.owner, Math.min(count, max))
  }

  private createIdempotency (): IdempotencyStore {
    const s = this.statements
    return {
      recall: async (owner: string, key: string): Promise<IdempotencyRecord | null> => {
        const row = this.read(() => s.keyRead.get(owner, key, Date.now()))
        return row ? { hash: row.hash, result: JSON.parse(row.result) } : null
      },
      remember: async (claim: IdempotencyClaim, result: unknown) => {
        const json = JSON.stringify(result ?? null)
        await this.enqueue(null, () => this.writeKey(claim, json))
      },
      expire: async (now = Date.now()) => this.enqueue(null, () => {
        const dropped = s.keyExpire.run(now).changes
        // counts are bounds: recounted on the next write of each owner
        if (dropped > 0) this.keyCounts.clear()
        return dropped
      })
    }
  }

  private createDocuments (): DocumentStore {
    const s = this.statements
    return {
      load: async (name: string): Promise<StoredDocument> => this.read(() => {
        const snapshot = s.docSnapshot.get(name)
        const rows = s.docUpdates.all(name)
        let bytes = snapshot?.data.length ?? 0
        for (const row of rows) bytes += row.data.length
        return {
          snapshot: snapshot ? new Uint8Array(snapshot.data) : null,
          updates: rows.map(row => new Uint8Array(row.data)),
          ids: rows.map(row => row.id),
          lastId: rows.at(-1)?.id ?? 0,
          bytes
        }
      }),
      append: async (name: string, update: Uint8Array) => this.enqueue(null, () => Number(s.docAppend.run(name, update).lastInsertRowid)),
      compact: async (name: string, snapshot: Uint8Array, upToId: number) => this.enqueue(null, () => {
        s.docSaveSnapshot.run(name, snapshot, upToId)
        s.docDropUpdates.run(name, upToId)
      })
    }
  }

  /** One process holds a data directory (its lock): every entry of another owner is an earlier run's, claimed at once. */
  private createOutbox (): OutboxStore {
    const s = this.statements
    const owner = randomUUID()
    return {
      put: async (ns: string, id: string, value: string) => this.enqueue(null, () => { s.outboxPut.run(ns, id, value, owner, Date.now()) }),
      remove: async (ns: string, id: string) => this.enqueue(null, () => { s.outboxRemove.run(ns, id) }),
      claim: async (ns: string) => this.enqueue(null, () => {
        const rows = s.outboxOthers.all(ns, owner)
        s.outboxTake.run(owner, ns, owner)
        return rows
      })
    }
  }

  private createLastEvents (): LastEventStore {
    const s = this.statements
    return {
      remember: async (ns: string, name: string, value: string, ttlMs: number) => this.enqueue(null, () => {
        s.lastWrite.run(ns, name, value, Date.now() + ttlMs)
      }),
      recall: async (ns: string, name: string) => this.read(() => s.lastRead.get(ns, name, Date.now())?.value ?? null),
      expire: async (now = Date.now()) => this.enqueue(null, () => s.lastExpire.run(now).changes)
    }
  }

  private createInbox (): InboxStore {
    const { inboxMax: max, inboxTtlMs: ttlMs } = this.opts
    const s = this.statements
    return {
      push: async (clientId: string, message: DirectMessage, claim?: IdempotencyClaim) => {
        if (claim) this.refuseDuplicate(claim)
        const result = claim ? JSON.stringify(claim.result ?? null) : ''
        if (max === 0) {
          if (claim) await this.enqueue(null, () => this.writeKey(claim, result))
          return
        }
        const expiresAt = Date.parse(message.timestamp) + ttlMs
        const json = JSON.stringify(message)
        await this.enqueue(null, () => {
          s.inboxPush.run(clientId, json, expiresAt)
          s.inboxTrim.run(clientId, clientId, max)
          if (claim) this.writeKey(claim, result)
        })
      },
      drain: async (clientId: string) => this.enqueue(null, () => {
        const rows = s.inboxRead.all(clientId, Date.now())
        s.inboxClear.run(clientId)
        return rows.map(row => JSON.parse(row.message) as DirectMessage)
      }),
      expire: async (now = Date.now()) => this.enqueue(null, () => s.inboxExpire.run(now).changes)
    }
  }
}

/** The file where earlier versions kept Yjs documents, apart from the store. */
export const LEGACY_DOCUMENTS_FILE = 'docs.sqlite'

/**
 * Earlier versions kept Yjs documents in DATA_DIR/docs.sqlite, outside the
 * store's lock, health and migrations. Its documents are copied into the
 * store once (one transaction), then the file is renamed `docs.sqlite.imported`
 * so the copy is never repeated and nothing is deleted.
 */
function importLegacyDocuments (db: Database.Database, dir: string, log: Log): void {
  const legacy = join(dir, LEGACY_DOCUMENTS_FILE)
  if (!existsSync(legacy)) return
  // its own connection first: what its WAL holds goes into the file before it is attached
  const old = new Database(legacy)
  let tables: string[]
  try {
    old.pragma('wal_checkpoint(TRUNCATE)')
    tables = old.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('ydoc_snapshot', 'ydoc_update')").all().map(row => row.name)
  } finally {
    old.close()
  }
  let documents = 0
  let updates = 0
  db.exec(`ATTACH DATABASE '${legacy.replaceAll("'", "''")}' AS legacy`)
  try {
    db.transaction(() => {
      if (tables.includes('ydoc_snapshot')) documents = db.prepare('INSERT OR IGNORE INTO ydoc_snapshot (name, data, up_to) SELECT name, data, up_to FROM legacy.ydoc_snapshot').run().changes
      if (tables.includes('ydoc_update')) updates = db.prepare('INSERT OR IGNORE INTO ydoc_update (id, name, data) SELECT id, name, data FROM legacy.ydoc_update').run().changes
    })()
  } finally {
    db.exec('DETACH DATABASE legacy')
  }
  renameSync(legacy, `${legacy}.imported`)
  for (const suffix of ['-wal', '-shm']) rmSync(legacy + suffix, { force: true })
  log.info({ event: 'store.documents_imported', file: legacy, snapshots: documents, updates, renamedTo: `${legacy}.imported` }, 'imported the Yjs documents of an earlier version into the store')
}

function toMessage (room: string, row: MessageRow, epoch: string): RoomMessage {
  return { type: 'room_message', room, offset: row.offset, messageId: row.message_id, from: row.sender, data: JSON.parse(row.data), timestamp: row.timestamp, epoch }
}
