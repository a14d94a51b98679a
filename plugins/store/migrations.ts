import type Database from 'better-sqlite3'
import { StoreOpenError } from './lock.js'

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
  },
  {
    version: 5,
    description: 'room epochs: a random id per room history, so offsets of another history are told apart',
    // rooms stored before epochs existed get one now: a client's offsets of before the upgrade then count as another epoch once
    sql: `
      ALTER TABLE rooms ADD COLUMN epoch TEXT;
      UPDATE rooms SET epoch = lower(hex(randomblob(8)));`
  },
  {
    version: 6,
    description: 'idempotency keys of writes: the reply of each, per owner, until it expires',
    sql: `
      CREATE TABLE idempotency_keys (
        owner      TEXT NOT NULL,
        key        TEXT NOT NULL,
        hash       TEXT NOT NULL,
        result     TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (owner, key)
      );
      CREATE INDEX idempotency_by_owner ON idempotency_keys (owner, expires_at);
      CREATE INDEX idempotency_by_expiry ON idempotency_keys (expires_at);`
  },
  {
    version: 7,
    description: 'Yjs documents: a snapshot per document and the updates appended after it',
    // the tables and columns of the separate docs.sqlite of earlier versions, which the store imports once
    sql: `
      CREATE TABLE ydoc_snapshot (name TEXT PRIMARY KEY, data BLOB NOT NULL, up_to INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE ydoc_update (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, data BLOB NOT NULL);
      CREATE INDEX ydoc_update_name ON ydoc_update (name, id);`
  },
  {
    version: 8,
    description: 'the last event of channels that keep one (Pusher cache channels), until it expires',
    sql: `
      CREATE TABLE last_events (
        ns         TEXT NOT NULL,
        name       TEXT NOT NULL,
        value      TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (ns, name)
      ) WITHOUT ROWID;
      CREATE INDEX last_events_by_expiry ON last_events (expires_at);`
  },
  {
    version: 9,
    description: 'requests waiting to be delivered (webhook batches), kept across a restart',
    sql: `
      CREATE TABLE outbox (
        ns         TEXT NOT NULL,
        id         TEXT NOT NULL,
        value      TEXT NOT NULL,
        owner      TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (ns, id)
      ) WITHOUT ROWID;`
  }
]

export function schemaVersion (db: Database.Database): number {
  const row = db.prepare<[], { v: number | null }>('SELECT max(version) AS v FROM schema_version').get()
  return row?.v ?? 0
}

/** Applies the migrations newer than the database, in order; returns their versions. */
export function migrate (db: Database.Database): number[] {
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
