import type { Redis } from 'ioredis'

/** What a document's storage holds: a compacted snapshot and the updates appended after it. */
export interface StoredDocument {
  snapshot: Uint8Array | null
  updates: Uint8Array[]
  /** The id of each update, in the order of `updates`. */
  ids: number[]
  /** Id of the last update read (0 = none): a compaction covers the updates up to it. */
  lastId: number
  /** Bytes of snapshot plus updates. */
  bytes: number
}

/**
 * Yjs documents (`app.store.documents`), kept by the store beside rooms and
 * inboxes: an append-only log of updates plus a snapshot. `append` resolves
 * only once the update is committed (SQLite: in the store's group commit,
 * under its health and lock; Redis: when Redis answered), so a caller relays
 * and acknowledges an update after that, never before.
 */
export interface DocumentStore {
  load (name: string): Promise<StoredDocument>
  /** Resolves with the update's id once it is committed. */
  append (name: string, update: Uint8Array): Promise<number>
  /** Replaces the snapshot and drops the updates up to `upToId` (they are in the snapshot). */
  compact (name: string, snapshot: Uint8Array, upToId: number): Promise<void>
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
 * Per document a snapshot, the id it covers, an id counter and a hash of the
 * updates appended after it: keys `<prefix>ydoc:{<name>}:snap|upto|seq|log`,
 * one hash slot per document. `call` is the Redis store's wrapper: an
 * operation while Redis is down fails at once as StoreUnavailableError.
 */
export class RedisDocumentStore implements DocumentStore {
  constructor (
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly call: <T>(op: () => Promise<T>) => Promise<T>
  ) {}

  private key (name: string, part: 'snap' | 'upto' | 'seq' | 'log'): string {
    return `${this.prefix}ydoc:{${name}}:${part}`
  }

  async load (name: string): Promise<StoredDocument> {
    const replies = await this.call(() => this.redis.multi().getBuffer(this.key(name, 'snap')).hgetallBuffer(this.key(name, 'log')).exec())
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
    return { snapshot: snap ? new Uint8Array(snap) : null, updates, ids, lastId: ids.at(-1) ?? 0, bytes }
  }

  async append (name: string, update: Uint8Array): Promise<number> {
    return Number(await this.call(() => this.redis.eval(APPEND, 2, this.key(name, 'seq'), this.key(name, 'log'), Buffer.from(update))))
  }

  async compact (name: string, snapshot: Uint8Array, upToId: number): Promise<void> {
    await this.call(() => this.redis.eval(COMPACT, 3, this.key(name, 'snap'), this.key(name, 'upto'), this.key(name, 'log'), Buffer.from(snapshot), upToId))
  }
}
