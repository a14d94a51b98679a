import { closeSync, fdatasync, fsyncSync, openSync } from 'node:fs'
import { dirname } from 'node:path'

type Synced = (err: NodeJS.ErrnoException | null) => void

/**
 * The fsync of the store's write-ahead log, off the event loop.
 *
 * SQLite runs with `synchronous=NORMAL` in WAL mode: a commit writes its
 * frames to the log without waiting for the disk, and every checkpoint still
 * syncs the log and the database before the log is reused (so the file is
 * never left inconsistent). This class supplies the missing half of
 * `synchronous=FULL`: after a commit, `after` runs its callback once an
 * `fdatasync` of the log *started after that commit* has returned, on libuv's
 * thread pool while the event loop serves others. Commits made while one sync
 * runs share the next one (group commit across batches).
 */
export class WalSync {
  /** Callbacks of commits covered by the sync in flight. */
  private current: Synced[] = []
  /** Callbacks of commits made since it started: they wait for the next one. */
  private waiting: Synced[] = []
  private inFlight = false
  private readonly fd: number
  /** fdatasync calls completed (status, tests). */
  syncs = 0

  /** Opens the log of `databaseFile` (created empty if SQLite has not yet) and makes its directory entry durable. */
  constructor (databaseFile: string) {
    this.fd = openSync(`${databaseFile}-wal`, 'a')
    const dir = openSync(dirname(databaseFile), 'r')
    try {
      fsyncSync(dir)
    } finally {
      closeSync(dir)
    }
  }

  /** `done` runs once every commit made so far is on disk (or with the sync's error). */
  after (done: Synced): void {
    this.waiting.push(done)
    if (!this.inFlight) this.start()
  }

  /** Resolves once every commit made so far is on disk: a read that must not see what a crash could still take back waits for it. */
  settled (): Promise<void> {
    if (this.waiting.length === 0 && !this.inFlight) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const done: Synced = err => { if (err) reject(err); else resolve() }
      // nothing committed since the sync in flight started: that sync covers every commit so far
      if (this.waiting.length === 0) this.current.push(done)
      else this.waiting.push(done)
    })
  }

  /** A sync is running or due. */
  get busy (): boolean {
    return this.inFlight || this.waiting.length > 0
  }

  close (): void {
    closeSync(this.fd)
  }

  private start (): void {
    this.current = this.waiting
    this.waiting = []
    this.inFlight = true
    fdatasync(this.fd, err => {
      this.inFlight = false
      this.syncs++
      const done = this.current
      this.current = []
      if (this.waiting.length > 0) this.start()
      for (const cb of done) cb(err)
    })
  }
}
