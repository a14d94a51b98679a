import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Worker } from 'node:worker_threads'
import type { DirectMessage, InboxStore } from './inbox.js'
import { applyMergePatch } from './merge-patch.js'
import type { RoomRow as SavedRoom, WriteOp, WriterData, WriterReply, WriterRequest } from './sqlite-writer.js'
import {
  StateTooLargeError, StoreUnavailableError, VersionConflictError,
  type NewRoomMessage, type PatchOptions, type PatchResult, type RoomMessage, type RoomSnapshot,
  type BatchTracer, type RoomSnapshotWithHistory, type RoomState, type RoomSummary, type Store
} from './store.js'

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
  /** Told the size and duration of every committed batch (metrics). */
  onCommit?: (writes: number, seconds: number) => void
}

/** The database file inside DATA_DIR. */
export const DATABASE_FILE = 'switchboard.db'

/** Refused at open: the message is what the operator reads. */
export class StoreOpenError extends Error {
  override name = 'StoreOpenError'
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
  op: WriteOp
  /** The room row as this write leaves it (null for inbox writes). */
  row: SavedRoom | null
  /** What the caller's promise resolves with, from the writer's result. */
  settle: (result: unknown) => unknown
  /** The caller's trace context, kept only while tracing is on. */
  origin: unknown
  resolve: (value: unknown) => void
  reject: (err: Error) => void
}

/** A batch handed to the writer thread, waiting for its answer. */
interface InFlight {
  id: number
  writes: PendingWrite[]
  rooms: Map<string, SavedRoom>
  done: (reply: { results: unknown[], seconds: number } | Error) => void
}

const writerUrl = new URL('./sqlite-writer.js', import.meta.url)

interface RoomRow { state: string, version: number, offset: number }
interface MessageRow { offset: number, message_id: string, sender: string, data: string, timestamp: string }

/**
 * The embedded store: one SQLite file in WAL mode with synchronous=FULL, so a
 * commit is on disk (not only in the OS cache) before its promise resolves and
 * an ack survives kill -9 and power loss alike. Group commit makes that cheap:
 * the writes requested while the previous batch commits share one transaction
 * and one fsync. Commits run on a writer thread (sqlite-writer.ts), so the
 * fsync never stalls the event loop; reads stay on this thread, on their own
 * connection, and only ever see committed data.
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
  /** Rooms with writes queued or committing: their heads must stay. */
  private readonly dirty = new Map<string, number>()
  private scheduled = false
  private closed = false
  private inFlight: InFlight | null = null
  private nextBatchId = 1
  private writer: Worker | null = null
  private idleWaiters: Array<() => void> = []
  private readonly statements

  private constructor (readonly db: Database.Database, private readonly opts: SqliteStoreOptions) {
    this.path = db.name
    this.statements = {
      room: db.prepare<[string], RoomRow>('SELECT state, version, "offset" AS "offset" FROM rooms WHERE room = ?'),
      rooms: db.prepare<[], RoomSummary>('SELECT room, version, "offset" AS "offset" FROM rooms ORDER BY room'),
      messagesAfter: db.prepare<[string, number, number], MessageRow>('SELECT "offset" AS "offset", message_id, sender, data, timestamp FROM room_messages WHERE room = ? AND "offset" > ? AND "offset" <= ? ORDER BY "offset"')
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
      db = new Database(file)
    } catch (err) {
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
      if (err instanceof StoreOpenError) throw err
      throw new StoreOpenError(`cannot use the SQLite store at ${file}: ${(err as Error).message}`)
    }
    opts.log.info({ event: 'store.opened', kind: 'sqlite', file, groupCommit: opts.groupCommit, schemaVersion: schemaVersion(db) }, 'store opened')
    const store = new SqliteStore(db, opts)
    store.startWriter()
    return store
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
    const op: WriteOp = { kind: 'message', room, offset, messageId: message.messageId, from: message.from, data, timestamp: message.timestamp, historySize }
    return this.enqueue(op, room, head, () => stored)
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
    return this.enqueue({ kind: 'state' }, room, head, () => ({ version, state }))
  }

  async listRooms (): Promise<RoomSummary[]> {
    return this.read(() => this.statements.rooms.all())
  }

  release (room: string): void {
    if (!this.dirty.has(room)) this.heads.delete(room)
  }

  /** Resolves once every write requested so far is committed (or has failed). */
  async flush (): Promise<void> {
    if (this.queue.length > 0 && this.inFlight === null) this.commit()
    while (this.queue.length > 0 || this.inFlight !== null) {
      await new Promise<void>(resolve => this.idleWaiters.push(resolve))
    }
  }

  async close (): Promise<void> {
    if (this.closed) return
    await this.flush()
    this.closed = true
    this.heads.clear()
    const writer = this.writer
    this.writer = null
    if (writer) {
      // the writer closes its connection (checkpointing the WAL) before it goes
      const gone = new Promise(resolve => writer.once('exit', resolve))
      writer.postMessage({ type: 'close' } satisfies WriterRequest)
      const timer = setTimeout(() => { writer.terminate().catch(() => {}) }, 5000)
      await gone
      clearTimeout(timer)
    }
    this.db.close()
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

  /** The writer thread; a new one replaces one that died. */
  private startWriter (): Worker {
    const writer = new Worker(writerUrl, { workerData: { file: this.path } satisfies WriterData })
    writer.on('message', (reply: WriterReply) => {
      const batch = this.inFlight
      if (batch === null) return
      if (reply.type === 'committed' && reply.id === batch.id) batch.done(reply)
      else if (reply.type === 'failed' && reply.id === batch.id) batch.done(new Error(reply.message))
    })
    const lost = (err: Error) => {
      if (this.writer === writer) this.writer = null
      this.opts.log.error({ event: 'store.writer_failed', err }, 'the SQLite writer thread stopped')
      this.inFlight?.done(err)
    }
    writer.on('error', lost)
    writer.on('exit', code => { if (this.writer === writer) lost(new Error(`the writer thread exited with code ${code}`)) })
    this.writer = writer
    return writer
  }

  private enqueue<T> (op: WriteOp, room: string | null, head: Head | null, settle: (result: unknown) => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the store is closed'))
    const row: SavedRoom | null = room !== null && head !== null ? [room, head.stateJson, head.version, head.offset] : null
    const done = new Promise<T>((resolve, reject) => {
      this.queue.push({ op, row, settle, origin: this.batchTracer?.capture(), resolve: resolve as (value: unknown) => void, reject })
    })
    if (room !== null) this.dirty.set(room, (this.dirty.get(room) ?? 0) + 1)
    if (this.inFlight === null && !this.scheduled) {
      this.scheduled = true
      // the other writes of this event-loop turn join the batch
      setImmediate(() => { this.scheduled = false; this.commit() })
    }
    return done
  }

  /** Hands the queued writes (all of them, or one without group commit) to the writer as one transaction. */
  private commit (): void {
    if (this.inFlight !== null) return
    if (this.queue.length === 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const wake of waiters) wake()
      return
    }
    const writes = this.opts.groupCommit ? this.queue : this.queue.slice(0, 1)
    this.queue = this.opts.groupCommit ? [] : this.queue.slice(1)
    const rooms = new Map<string, SavedRoom>()
    for (const write of writes) if (write.row !== null) rooms.set(write.row[0], write.row)
    const batch: InFlight = { id: this.nextBatchId++, writes, rooms, done: () => {} }
    this.inFlight = batch
    const finished = new Promise<Error | undefined>(resolve => {
      batch.done = reply => {
        if (this.inFlight !== batch) return
        this.inFlight = null
        resolve(this.settle(batch, reply))
        this.commit()
      }
    })
    const writer = this.writer ?? this.startWriter()
    writer.postMessage({ type: 'commit', id: batch.id, ops: writes.map(write => write.op), rooms: [...rooms.values()], now: new Date().toISOString() } satisfies WriterRequest)
    if (this.batchTracer !== undefined) {
      this.batchTracer.trace(writes.map(write => write.origin), rooms.size, () => finished).catch(() => {})
    }
  }

  /** Resolves or rejects the writers of a batch; returns the failure, if any. */
  private settle (batch: InFlight, reply: { results: unknown[], seconds: number } | Error): Error | undefined {
    const { writes, rooms } = batch
    for (const write of writes) {
      const room = write.row?.[0]
      if (room === undefined) continue
      const left = (this.dirty.get(room) ?? 1) - 1
      if (left > 0) this.dirty.set(room, left)
      else this.dirty.delete(room)
    }
    if (reply instanceof Error) {
      this.counters.failedCommits++
      this.opts.log.error({ event: 'store.batch_failed', writes: writes.length, rooms: rooms.size, err: reply }, 'a batch of writes could not be committed')
      const failure = new StoreUnavailableError(`the store could not commit: ${reply.message}`)
      // the queued writes were built on what just failed: they fail with it, and
      // what this process believed about their rooms is read again from the database
      const queued = this.queue
      this.queue = []
      for (const write of [...writes, ...queued]) {
        if (write.row !== null) this.heads.delete(write.row[0])
        write.reject(failure)
      }
      this.dirty.clear()
      return failure
    }
    for (const [room, [, stateJson, version, offset]] of rooms) {
      const head = this.heads.get(room)
      if (!head) continue
      // the committed snapshot is the row as this batch wrote it: later writes may be queued already
      const state = version === head.version ? head.state : JSON.parse(stateJson) as RoomState
      head.committed = { room, state, version, offset }
    }
    this.counters.commits++
    this.counters.writes += writes.length
    this.opts.onCommit?.(writes.length, reply.seconds)
    writes.forEach((write, i) => {
      let value: unknown
      try {
        value = write.settle(reply.results[i])
      } catch (err) {
        return write.reject(err as Error)
      }
      write.resolve(value)
    })
    return undefined
  }

  private createInbox (): InboxStore {
    const { inboxMax: max, inboxTtlMs: ttlMs } = this.opts
    return {
      push: async (clientId: string, message: DirectMessage) => {
        if (max === 0) return
        const expiresAt = Date.parse(message.timestamp) + ttlMs
        await this.enqueue({ kind: 'inbox_push', clientId, message: JSON.stringify(message), expiresAt, max }, null, null, () => undefined)
      },
      drain: async (clientId: string) => this.enqueue({ kind: 'inbox_drain', clientId, now: Date.now() }, null, null,
        rows => (rows as string[]).map(row => JSON.parse(row) as DirectMessage)),
      expire: async (now = Date.now()) => this.enqueue({ kind: 'inbox_expire', now }, null, null, changes => changes as number)
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
