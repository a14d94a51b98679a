import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'

/** What a document's storage holds: a compacted snapshot and the updates appended after it. */
export interface StoredDocument {
  snapshot: Uint8Array | null
  updates: Uint8Array[]
  /** Id of the last update read (0 = none): a compaction covers the updates up to it. */
  lastId: number
  /** Bytes of snapshot plus updates. */
  bytes: number
}

/**
 * Durable storage of Yjs documents as an append-only log of updates plus a
 * snapshot. `append` resolves only once the update is committed: the caller
 * relays it (and acknowledges it) after that, never before.
 */
export interface DocumentStore {
  readonly kind: 'sqlite' | 'redis'
  load (name: string): Promise<StoredDocument>
  /** Resolves with the update's id once it is committed. */
  append (name: string, update: Uint8Array): Promise<number>
  /** Replaces the snapshot and drops the updates up to `upToId` (they are in the snapshot). */
  compact (name: string, snapshot: Uint8Array, upToId: number): Promise<void>
  close (): Promise<void>
}

interface Pending {
  name: string
  update: Uint8Array
  resolve: (id: number) => void
  reject: (err: Error) => void
}

/**
 * SQLite in its own file (DATA_DIR/docs.sqlite), WAL and synchronous=FULL:
 * a committed update survives a kill -9 and a power cut. Appends that arrive
 * in the same turn of the event loop share one transaction (group commit).
 */
export class SqliteDocumentStore implements DocumentStore {
  readonly kind = 'sqlite'
  private readonly db: Database.Database
  private readonly insert: Database.Statement
  private readonly selectSnapshot: Database.Statement
  private readonly selectUpdates: Database.Statement
  private readonly upsertSnapshot: Database.Statement
  private readonly deleteUpdates: Database.Statement
  private queue: Pending[] = []
  private scheduled = false
  private closed = false

  constructor (dataDir: string) {
    mkdirSync(dataDir, { recursive: true })
    this.db = new Database(join(dataDir, 'docs.sqlite'))
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = FULL')
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS ydoc_snapshot (name TEXT PRIMARY KEY, data BLOB NOT NULL, up_to INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS ydoc_update (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, data BLOB NOT NULL);
      CREATE INDEX IF NOT EXISTS ydoc_update_name ON ydoc_update (name, id);
    `)
    this.insert = this.db.prepare('INSERT INTO ydoc_update (name, data) VALUES (?, ?)')
    this.selectSnapshot = this.db.prepare('SELECT data FROM ydoc_snapshot WHERE name = ?')
    this.selectUpdates = this.db.prepare('SELECT id, data FROM ydoc_update WHERE name = ? ORDER BY id')
    this.upsertSnapshot = this.db.prepare('INSERT INTO ydoc_snapshot (name, data, up_to) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET data = excluded.data, up_to = excluded.up_to')
    this.deleteUpdates = this.db.prepare('DELETE FROM ydoc_update WHERE name = ? AND id <= ?')
  }

  async load (name: string): Promise<StoredDocument> {
    this.assertOpen()
    const snap = this.selectSnapshot.get(name) as { data: Buffer } | undefined
    const rows = this.selectUpdates.all(name) as Array<{ id: number, data: Buffer }>
    let bytes = snap?.data.length ?? 0
    for (const row of rows) bytes += row.data.length
    return { snapshot: snap ? new Uint8Array(snap.data) : null, updates: rows.map(r => new Uint8Array(r.data)), lastId: rows.at(-1)?.id ?? 0, bytes }
  }

  append (name: string, update: Uint8Array): Promise<number> {
    this.assertOpen()
    return new Promise((resolve, reject) => {
      this.queue.push({ name, update, resolve, reject })
      if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => this.flush())
      }
    })
  }

  private flush (): void {
    this.scheduled = false
    const batch = this.queue
    this.queue = []
    if (batch.length === 0) return
    let ids: number[]
    try {
      ids = this.db.transaction(() => batch.map(p => Number(this.insert.run(p.name, p.update).lastInsertRowid)))()
    } catch (err) {
      for (const p of batch) p.reject(err as Error)
      return
    }
    batch.forEach((p, i) => p.resolve(ids[i]))
  }

  async compact (name: string, snapshot: Uint8Array, upToId: number): Promise<void> {
    this.assertOpen()
    this.db.transaction(() => {
      this.upsertSnapshot.run(name, snapshot, upToId)
      this.deleteUpdates.run(name, upToId)
    })()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.flush()
    this.closed = true
    this.db.close()
  }

  private assertOpen (): void {
    if (this.closed) throw new Error('the document store is closed')
  }
}

/** The subset of an ioredis client the Redis document store uses. */
export interface RedisCommands {
  eval (script: string, numKeys: number, ...args: Array<string | Buffer | number>): Promise<unknown>
  multi (): RedisPipeline
}
interface RedisPipeline {
  getBuffer (key: string): RedisPipeline
  hgetallBuffer (key: string): RedisPipeline
  exec (): Promise<Array<[Error | null, unknown]> | null>
}

const APPEND = `local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], id, ARGV[1])
return id`

// Two instances may compact the same document: a snapshot never replaces a newer one,
// so updates another instance appended after this one's read are never dropped.
const COMPACT = `local upTo = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') >= upTo then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], upTo)
for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
  if tonumber(field) <= upTo then redis.call('HDEL', KEYS[3], field) end
end
return 1`

/**
 * Redis, through the service's command connection: per document a snapshot,
 * the id it covers, an id counter and a hash of the updates appended after
 * it (keys `<prefix>ydoc:{<name>}:…`, one hash slot per document). An append
 * is committed when Redis answers (durability as Redis is configured:
 * appendfsync, docs/redis.md).
 */
export class RedisDocumentStore implements DocumentStore {
  readonly kind = 'redis'

  constructor (private readonly redis: RedisCommands, private readonly prefix: string) {}

  private key (name: string, part: 'snap' | 'upto' | 'seq' | 'log'): string {
    return `${this.prefix}ydoc:{${name}}:${part}`
  }

  async load (name: string): Promise<StoredDocument> {
    const replies = await this.redis.multi().getBuffer(this.key(name, 'snap')).hgetallBuffer(this.key(name, 'log')).exec()
    if (!replies) throw new Error('the document read was aborted')
    for (const [err] of replies) if (err) throw err
    const snap = replies[0][1] as Buffer | null
    const log = (replies[1][1] ?? {}) as Record<string, Buffer>
    const ids = Object.keys(log).map(Number).sort((a, b) => a - b)
    let bytes = snap?.length ?? 0
    const updates = ids.map(id => {
      bytes += log[id].length
      return new Uint8Array(log[id])
    })
    return { snapshot: snap ? new Uint8Array(snap) : null, updates, lastId: ids.at(-1) ?? 0, bytes }
  }

  async append (name: string, update: Uint8Array): Promise<number> {
    return Number(await this.redis.eval(APPEND, 2, this.key(name, 'seq'), this.key(name, 'log'), Buffer.from(update)))
  }

  async compact (name: string, snapshot: Uint8Array, upToId: number): Promise<void> {
    await this.redis.eval(COMPACT, 3, this.key(name, 'snap'), this.key(name, 'upto'), this.key(name, 'log'), Buffer.from(snapshot), upToId)
  }

  async close (): Promise<void> {
    // the connection belongs to the redis plugin, which closes it after this plugin
  }
}
