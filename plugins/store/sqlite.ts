import Database from 'better-sqlite3'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { DirectMessage } from '../../protocol/frames.js'
import { applyMergePatch } from '../../protocol/merge-patch.js'
import {
  StateTooLargeError, StoreUnavailableError, VersionConflictError, type InboxStore,
  type NewRoomMessage, type PatchOptions, type PatchResult, type RoomMessage, type RoomSnapshot,
  ROOM_NAME_END, type RoomPage, type BatchTracer, type RoomSnapshotWithHistory, type RoomState, type RoomSummary, type Store
} from './interface.js'
import { storeFailureReason, type StoreHealth } from './health.js'

interface Log {
  info (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

export interface SqliteStoreOptions {
  dataDir: string
  groupCommit: boolean
  inboxMax: number
  inboxTtlMs: number
  log: Log
  /** Told of every failed and succeeded commit (degraded status, one log line per failure and interval). */
  health?: StoreHealth
  /** Told the size and duration of every committed batch (metrics). */
  onCommit?: (writes: number, seconds: number) => void
}

/** The database file inside DATA_DIR. */
export const DATABASE_FILE = 'switchboard.db'

/** Held by the process that has DATA_DIR open (an SQLite file under an exclusive OS lock). */
export const LOCK_FILE = 'switchboard.lock'
/** The pid of that process, to name it to a second one; informative only, the OS lock decides. */
export const PID_FILE = 'switchboard.pid'

/** Refused at open: the message is what the operator reads. */
export class StoreOpenError extends Error {
  override name = 'StoreOpenError'
}

/**
 * One process per DATA_DIR. The lock is SQLite's own file lock (fcntl) on
 * DATA_DIR/switchboard.lock, taken with a write in EXCLUSIVE locking mode and
 * held until the connection closes: the kernel releases it when the process
 * dies, kill -9 included, so it never outlives its holder and a reused pid
 * cannot fool it. It is a separate file so that the database itself stays in
 * ordinary WAL locking and `sqlite3 .backup` still works while the server runs.
 */
export class StoreLock {
  private constructor (private readonly db: Database.Database, private readonly pidFile: string) {}

  static acquire (dir: string): StoreLock {
    const file = join(dir, LOCK_FILE)
    const pidFile = join(dir, PID_FILE)
    const db = new Database(file)
    try {
      db.pragma('busy_timeout = 0')
      db.pragma('locking_mode = EXCLUSIVE')
      db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL); DELETE FROM holder;')
      db.prepare('INSERT INTO holder (pid) VALUES (?)').run(process.pid)
    } catch (err) {
      db.close()
      if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw new StoreOpenError(`cannot lock the SQLite store at ${file}: ${(err as Error).message}`)
      const holder = readHolder(pidFile)
      throw new StoreOpenError(`the SQLite store at ${dir} is in use by ${holder === null ? 'another process' : `process ${holder}`}; one process per DATA_DIR (stop it, or give this one another DATA_DIR)`)
    }
    writeFileSync(pidFile, `${process.pid}\n`)
    return new StoreLock(db, pidFile)
  }

  release (): void {
    if (readHolder(this.pidFile) === process.pid) rmSync(this.pidFile, { force: true })
    this.db.close()
  }
}

function readHolder (pidFile: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(pidFile, 'utf8'), 10)
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null
  } catch {
    return null
  }
}

/**
 * Ordered schema migrations: each runs once, in its own transaction, and is
 * recorded in schema_version. Append new ones; never edit an applied one.
 */
export const MIGRATIONS: ReadonlyArray<{ version: number, description: string, sql: string }> = [
  {
    version: 1,
    description: 'rooms and their message history',
    sql: `
      CREATE TABLE rooms (
        room       TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        version    INTEGER NOT NULL,
        "offset"   INTEGER NOT NULL,
        updated_at TEXT NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE room_messages (
        room       TEXT NOT NULL,
        "offset"   INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        sender     TEXT NOT NULL,
        data       TEXT NOT NULL,
        timestamp  TEXT NOT NULL,
        PRIMARY KEY (room, "offset")
      ) WITHOUT ROWID;`
  },
  {
    version: 2,
    description: 'queued direct messages for offline clients',
    sql: `
      CREATE TABLE inbox (
        id         INTEGER PRIMARY KEY,
        client_id  TEXT NOT NULL,
        message    TEXT NOT NULL,
        expires_at INTEGER NOT NULL
      );
      CREATE INDEX inbox_by_client ON inbox (client_id, id);
      CREATE INDEX inbox_by_expiry ON inbox (expires_at);`
  },
  {
    version: 3,
    description: 'room offsets in their own table, so a publish does not rewrite the room state',
    // rooms."offset" stays: it is written with the state, and a room's offset is the larger of the two
    sql: `
      CREATE TABLE room_offsets (
        room     TEXT PRIMARY KEY,
        "offset" INTEGER NOT NULL
      ) WITHOUT ROWID;
      INSERT INTO room_offsets (room, "offset") SELECT room, "offset" FROM rooms;`
  },
  {
    version: 4,
    description: 'a scratch table for the write probe that tells when a failing store accepts writes again',
    sql: 'CREATE TABLE store_probe (id INTEGER PRIMARY KEY, data BLOB NOT NULL);'
  }
]

/** A room as this process knows it: the latest head (pending writes included) and the committed one. */
interface Head {
  state: RoomState
  stateJson: string
  version: number
  offset: number
  committed: RoomSnapshot | null
}

interface PendingWrite {
  run: () => unknown
  /** The caller's trace context, kept only while tracing is on. */
  origin: unknown
  resolve: (value: unknown) => void
  reject: (err: Error) => void
}

interface RoomRow { state: string, version: number, offset: number }
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
  readonly path: string
  /** Counters for status and the benchmark. */
  readonly counters = { commits: 0, writes: 0, failedCommits: 0 }
  batchTracer?: BatchTracer

  private readonly heads = new Map<string, Head>()
  private queue: PendingWrite[] = []
  private dirty = new Set<string>()
  private scheduled = false
  private closed = false
  private readonly statements

  private constructor (readonly db: Database.Database, private readonly opts: SqliteStoreOptions, private readonly lock: StoreLock) {
    this.path = db.name
    this.statements = {
      room: db.prepare<[string], RoomRow>(`SELECT r.state, r.version, MAX(r."offset", COALESCE(o."offset", 0)) AS "offset"
        FROM rooms r LEFT JOIN room_offsets o ON o.room = r.room WHERE r.room = ?`),
      rooms: db.prepare<[], RoomSummary>(`SELECT r.room, r.version, MAX(r."offset", COALESCE(o."offset", 0)) AS "offset"
        FROM rooms r LEFT JOIN room_offsets o ON o.room = r.room ORDER BY r.room`),
      // a range of the primary key: as cheap with 50 rooms as with 50 million
      roomsPage: db.prepare<[string, string, string, number], RoomSummary>(`SELECT r.room, r.version, MAX(r."offset", COALESCE(o."offset", 0)) AS "offset"
        FROM rooms r LEFT JOIN room_offsets o ON o.room = r.room WHERE r.room > ? AND r.room >= ? AND r.room < ? ORDER BY r.room LIMIT ?`),
      saveRoom: db.prepare(`INSERT INTO rooms (room, state, version, "offset", updated_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (room) DO UPDATE SET state = excluded.state, version = excluded.version, "offset" = excluded."offset", updated_at = excluded.updated_at`),
      saveOffset: db.prepare(`INSERT INTO room_offsets (room, "offset") VALUES (?, ?)
        ON CONFLICT (room) DO UPDATE SET "offset" = excluded."offset"`),
      addMessage: db.prepare('INSERT INTO room_messages (room, "offset", message_id, sender, data, timestamp) VALUES (?, ?, ?, ?, ?, ?)'),
      trimMessages: db.prepare('DELETE FROM room_messages WHERE room = ? AND "offset" <= ?'),
      messagesAfter: db.prepare<[string, number, number], MessageRow>('SELECT "offset" AS "offset", message_id, sender, data, timestamp FROM room_messages WHERE room = ? AND "offset" > ? AND "offset" <= ? ORDER BY "offset"'),
      inboxPush: db.prepare('INSERT INTO inbox (client_id, message, expires_at) VALUES (?, ?, ?)'),
      inboxTrim: db.prepare('DELETE FROM inbox WHERE client_id = ? AND id NOT IN (SELECT id FROM inbox WHERE client_id = ? ORDER BY id DESC LIMIT ?)'),
      inboxRead: db.prepare<[string, number], { message: string }>('SELECT message FROM inbox WHERE client_id = ? AND expires_at > ? ORDER BY id'),
      inboxClear: db.prepare('DELETE FROM inbox WHERE client_id = ?'),
      inboxExpire: db.prepare('DELETE FROM inbox WHERE expires_at <= ?')
    }
    this.inbox = this.createInbox()
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
    // a client ahead of the store (say, after a restore) gets the whole history
    const from = since > snapshot.offset ? 0 : since
    const rows = this.read(() => this.statements.messagesAfter.all(room, from, snapshot.offset))
    const missed = rows.map(row => toMessage(room, row))
    const complete = since <= snapshot.offset && (since === snapshot.offset || missed[0]?.offset === since + 1)
    return { ...snapshot, missed, complete }
  }

  async appendMessage (room: string, message: NewRoomMessage, historySize: number): Promise<RoomMessage> {
    const head = this.writableHead(room)
    const offset = ++head.offset
    const stored: RoomMessage = { type: 'room_message', room, offset, ...message }
    const data = JSON.stringify(message.data ?? null)
    return this.enqueue(room, () => {
      if (historySize > 0) this.statements.addMessage.run(room, offset, message.messageId, message.from, data, message.timestamp)
      this.statements.trimMessages.run(room, offset - historySize)
      return stored
    })
  }

  async applyPatch (room: string, patch: RoomState, opts: PatchOptions): Promise<PatchResult> {
    const head = this.writableHead(room)
    if (opts.baseVersion !== undefined && opts.baseVersion !== head.version) {
      throw new VersionConflictError(room, head.version, opts.baseVersion)
    }
    const state = applyMergePatch(head.state, patch)
    const stateJson = JSON.stringify(state)
    const bytes = Buffer.byteLength(stateJson)
    if (bytes > opts.maxBytes) throw new StateTooLargeError(room, bytes, opts.maxBytes)
    head.state = state
    head.stateJson = stateJson
    const version = ++head.version
    return this.enqueue(room, () => ({ version, state }))
  }

  async listRooms (page?: RoomPage): Promise<RoomSummary[]> {
    if (page === undefined) return this.read(() => this.statements.rooms.all())
    const prefix = page.prefix ?? ''
    return this.read(() => this.statements.roomsPage.all(page.after ?? '', prefix, prefix + ROOM_NAME_END, page.limit))
  }

  release (room: string): void {
    if (!this.dirty.has(room)) this.heads.delete(room)
  }

  /**
   * A write that needs new pages (a few KB, written then deleted in one
   * transaction): it fails with SQLITE_FULL while the disk (or max_page_count)
   * is full, SQLITE_READONLY or SQLITE_IOERR while those last.
   */
  probeWrite (): void {
    if (this.closed) return
    this.db.transaction(() => {
      this.db.prepare('INSERT INTO store_probe (data) VALUES (zeroblob(16384))').run()
      this.db.prepare('DELETE FROM store_probe').run()
    })()
  }

  /** Commits every pending write now, in one transaction. */
  async flush (): Promise<void> {
    this.commit()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.commit()
    this.closed = true
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
      let state: RoomState
      try {
        state = JSON.parse(row.state) as RoomState
      } catch (err) {
        throw new StoreUnavailableError(`the stored state of room ${room} is unreadable: ${(err as Error).message}`)
      }
      head = { state, stateJson: row.state, version: row.version, offset: row.offset, committed: { room, state, version: row.version, offset: row.offset } }
    } else {
      head = { state: {}, stateJson: '{}', version: 0, offset: 0, committed: null }
    }
    this.heads.set(room, head)
    return head
  }

  private writableHead (room: string): Head {
    if (this.closed) throw new StoreUnavailableError('the store is closed')
    return this.head(room, true) as Head
  }

  private read<T> (fn: () => T): T {
    if (this.closed) throw new StoreUnavailableError('the store is closed')
    try {
      return fn()
    } catch (err) {
      throw new StoreUnavailableError(`the store could not be read: ${(err as Error).message}`)
    }
  }

  private enqueue<T> (room: string | null, run: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the store is closed'))
    const done = new Promise<T>((resolve, reject) => {
      this.queue.push({ run, origin: this.batchTracer?.capture(), resolve: resolve as (value: unknown) => void, reject })
    })
    if (room !== null) this.dirty.add(room)
    if (!this.opts.groupCommit) this.commit()
    else if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.commit())
    }
    return done
  }

  /** One transaction for every queued write, then each caller hears the outcome. */
  private commit (): void {
    this.scheduled = false
    if (this.queue.length === 0) return
    const queue = this.queue
    const dirty = this.dirty
    this.queue = []
    this.dirty = new Set()
    if (this.batchTracer === undefined) this.commitBatch(queue, dirty)
    else this.batchTracer.trace(queue.map(write => write.origin), dirty.size, () => this.commitBatch(queue, dirty))
  }

  /** Commits one batch; resolves or rejects its writers and returns the failure, if any. */
  private commitBatch (queue: PendingWrite[], dirty: Set<string>): Error | undefined {
    const now = new Date().toISOString()
    const started = process.hrtime.bigint()
    let results: unknown[]
    try {
      results = this.db.transaction(() => {
        const out = queue.map(write => write.run())
        for (const room of dirty) {
          const head = this.heads.get(room) as Head
          // the state (up to ROOM_STATE_MAX_BYTES) is written only when it changed: a publish moves the offset alone
          if (head.committed === null || head.committed.version !== head.version) {
            this.statements.saveRoom.run(room, head.stateJson, head.version, head.offset, now)
          } else if (head.committed.offset !== head.offset) {
            this.statements.saveOffset.run(room, head.offset)
          }
        }
        return out
      })()
    } catch (err) {
      // what this process believed about these rooms was never committed: forget it
      for (const room of dirty) this.heads.delete(room)
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
      head.committed = { room, state: head.state, version: head.version, offset: head.offset }
    }
    this.counters.commits++
    this.counters.writes += queue.length
    this.opts.onCommit?.(queue.length, Number(process.hrtime.bigint() - started) / 1e9)
    queue.forEach((write, i) => write.resolve(results[i]))
    return undefined
  }

  private createInbox (): InboxStore {
    const { inboxMax: max, inboxTtlMs: ttlMs } = this.opts
    const s = this.statements
    return {
      push: async (clientId: string, message: DirectMessage) => {
        if (max === 0) return
        const expiresAt = Date.parse(message.timestamp) + ttlMs
        const json = JSON.stringify(message)
        await this.enqueue(null, () => {
          s.inboxPush.run(clientId, json, expiresAt)
          s.inboxTrim.run(clientId, clientId, max)
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

function toMessage (room: string, row: MessageRow): RoomMessage {
  return { type: 'room_message', room, offset: row.offset, messageId: row.message_id, from: row.sender, data: JSON.parse(row.data), timestamp: row.timestamp }
}

function schemaVersion (db: Database.Database): number {
  const row = db.prepare<[], { v: number | null }>('SELECT max(version) AS v FROM schema_version').get()
  return row?.v ?? 0
}

/** Applies the migrations newer than the database, in order; returns their versions. */
function migrate (db: Database.Database): number[] {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)')
  const current = schemaVersion(db)
  const latest = MIGRATIONS[MIGRATIONS.length - 1].version
  if (current > latest) {
    throw new StoreOpenError(`the SQLite store has schema version ${current}, newer than this build knows (${latest}); upgrade the server`)
  }
  const applied: number[] = []
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue
    db.transaction(() => {
      db.exec(m.sql)
      db.prepare('INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)').run(m.version, m.description, new Date().toISOString())
    })()
    applied.push(m.version)
  }
  return applied
}
