import Database from 'better-sqlite3'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

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
