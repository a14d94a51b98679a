import type { Redis } from 'ioredis'
import { randomUUID } from 'node:crypto'
import type { DirectMessage } from '../../protocol/frames.js'
import { applyMergePatch } from '../../protocol/merge-patch.js'
import { newEpoch, parseState, patchedState, recoveryWindow } from './room-state.js'
import { DEFAULT_KEY_PREFIX, RedisUnavailableError, hashTag } from '../core/redis.js'
import {
  InvalidPatchError, StateTooLargeError, StoreUnavailableError, VersionConflictError,
  type NewRoomMessage, type PatchOptions, type PatchResult, type RoomMessage, type RoomSnapshot,
  type RoomSnapshotWithHistory, type RoomState, type RoomSummary, type Store, type RoomPage, ROOM_NAME_END, type InboxStore,
  DuplicateKeyError, type IdempotencyClaim, type IdempotencyRecord, type IdempotencyStore
} from './interface.js'
import type { DocumentStore, LastEventStore, OutboxStore } from './interface.js'
import { RedisDocumentStore } from './documents.js'
import { RedisLastEvents } from './last-events.js'
import { RedisOutbox } from './outbox.js'

export interface RedisStoreOptions {
  inboxMax: number
  inboxTtlMs: number
  /** Idempotency keys kept per owner; the oldest go first [1000]. */
  idempotencyMaxKeys?: number
  /** Throws when Redis is not reachable, so an operation fails at once instead of waiting. */
  requireReady: () => void
  /** What every key starts with (REDIS_KEY_PREFIX) ['sb:']. */
  keyPrefix?: string
  /** Redis is a Redis Cluster: keys hash-tagged, the listing bucketed, idempotency claimed per owner and per target. */
  cluster?: boolean
}

/*
 * Keys:
 *   sb:room:<room>          hash  state (JSON), version, offset, epoch (set by the room's first write)
 *   sb:room:<room>:history  list  the last ROOM_HISTORY_SIZE messages, oldest first
 *   sb:rooms                set   every stored room name
 *   sb:rooms:index          zset  the same names, score 0: ordered for ZRANGEBYLEX pages
 *   sb:inbox:<clientId>     list  queued direct messages, expiring INBOX_TTL_MS after the last push
 *   sb:idem:<owner>         hash  idempotency key → {"hash","result"} of the write it keyed
 *   sb:idem:<owner>:exp     zset  the same keys scored by expiry: swept and capped by each write of
 *                                 the owner; both keys expire with the owner's newest record
 *   sb:ydoc:{<doc>}:snap|upto|seq|log   a Yjs document: snapshot, the update id it covers, the id
 *                                 counter and the hash of updates after the snapshot (documents.ts)
 *   sb:pusher:{<app>:<channel>}:c        a Pusher cache channel's last event, expiring (last-events.ts)
 *
 * On a Redis Cluster (REDIS_CLUSTER_NODES) the keys of one room, one inbox and
 * one owner carry a hash tag, so each script runs on one shard:
 *   sb:room:{r:<room>}  sb:room:{r:<room>}:history  sb:inbox:{c:<clientId>}
 *   sb:idem:{r:<room>}:<owner>(:exp)     the records of the writes an owner made to that room,
 *   sb:idem:{c:<clientId>}:<owner>(:exp) ... to that client's inbox: committed in the write's script
 *   sb:idem:{o:<owner>}(:exp)            the owner's records across targets: claimed (pending, with
 *                                        the request's hash) before the write, settled after it
 *   sb:rooms:index:{b:<0..15>}           the listing, in 16 buckets by a hash of the name (ZADD before
 *                                        the room's first write from this process; a page reads each
 *                                        bucket's next `limit` names and merges them)
 * A repeat of a write is refused by the owner's record (or, if the first one's
 * process died between its write and the settle, by the target's record in
 * the write's own script), so a write applies once even though no script can
 * hold both the target's and the owner's keys; another body under the same
 * key is refused by the owner's record, even while pending.
 *
 * Every write is one Lua script: Redis runs it alone, so the read of the
 * current offset/version and the write of the next one cannot interleave with
 * another instance's. WATCH/MULTI would give the same result with a retry loop
 * and two or three round trips per write under contention; a script is one.
 */

/**
 * Idempotency records: `find` returns the owner's unexpired record of a key;
 * `put` writes one, drops the owner's expired ones and, past `max`, its oldest.
 */
const IDEMPOTENCY = `
local function idem_find (h, z, field, now)
  local expires = redis.call('ZSCORE', z, field)
  if expires and tonumber(expires) > now then return redis.call('HGET', h, field) end
  return false
end
local function idem_drop (h, z, fields)
  for i = 1, #fields, 1000 do
    redis.call('HDEL', h, unpack(fields, i, math.min(i + 999, #fields)))
  end
end
local function idem_put (h, z, field, value, expires, now, max)
  redis.call('HSET', h, field, value)
  redis.call('ZADD', z, expires, field)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #gone > 0 then
    idem_drop(h, z, gone)
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  end
  local n = redis.call('ZCARD', z)
  if n > max then
    idem_drop(h, z, redis.call('ZRANGE', z, 0, n - max - 1))
    redis.call('ZREMRANGEBYRANK', z, 0, n - max - 1)
  end
  local ttl = math.max(1, expires - now)
  if redis.call('PTTL', z) < ttl then
    redis.call('PEXPIRE', h, ttl)
    redis.call('PEXPIRE', z, ttl)
  end
end
`

/**
 * Appends a message: the next offset and the history entry (trimmed); a room's
 * first write also lists the room and sets its epoch, so a steady append is
 * four commands (HGET, HINCRBY, RPUSH, LTRIM). Returns {offset, epoch}.
 * The idempotent variant (KEYS[4..5], ARGV[5..10]) returns {0, record} for a
 * key already used, else commits the record in the same script.
 */
/** On a Redis Cluster the listing is written outside the script (another slot): no KEYS[3], the records at KEYS[3..4]. */
const appendCheck = (i: number) => `local now = tonumber(ARGV[9])
local found = idem_find(KEYS[${i}], KEYS[${i + 1}], ARGV[5], now)
if found then return {0, found} end`
const appendRecord = (i: number) => `idem_put(KEYS[${i}], KEYS[${i + 1}], ARGV[5], ARGV[6] .. offset .. ARGV[7], tonumber(ARGV[8]), now, tonumber(ARGV[10]))`
const LIST_ROOM = `
  redis.call('SADD', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[3] .. ':index', 0, ARGV[1])`
const appendScript = (idempotent: boolean, cluster = false) => `${idempotent ? IDEMPOTENCY + appendCheck(cluster ? 3 : 4) : ''}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  -- a new room (or one stored before epochs): its fields, its epoch and its place in the list, once
  redis.call('HSETNX', KEYS[1], 'state', '{}')
  redis.call('HSETNX', KEYS[1], 'version', 0)
  redis.call('HSET', KEYS[1], 'epoch', ARGV[4])${cluster ? '' : LIST_ROOM}
  epoch = ARGV[4]
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local keep = tonumber(ARGV[3])
if keep > 0 then
  redis.call('RPUSH', KEYS[2], '{"offset":' .. offset .. ',' .. string.sub(ARGV[2], 2))
  redis.call('LTRIM', KEYS[2], -keep, -1)
else
  redis.call('DEL', KEYS[2])
end
${idempotent ? appendRecord(cluster ? 3 : 4) : ''}
return {1, offset, epoch}`

/**
 * Sets a state computed by the caller only if the room is still at the version
 * the caller computed it from (compare-and-set); otherwise returns the current
 * version and state so the caller can recompute without another round trip.
 */
const setStateScript = (cluster: boolean) => `${IDEMPOTENCY}
-- idempotency claims: KEYS[b + 2i], KEYS[b + 1 + 2i] (b = 1, or 0 on a cluster: no KEYS[2]); ARGV[8 + 3(i-1)] field, value, expires
local b = ${cluster ? 0 : 1}
local claims = (#KEYS - 1 - b) / 2
local now = tonumber(ARGV[6])
for i = 1, claims do
  local found = idem_find(KEYS[b + 2 * i], KEYS[b + 1 + 2 * i], ARGV[5 + 3 * i], now)
  if found then return {2, i, found} end
end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[2]) then
  return {0, current, redis.call('HGET', KEYS[1], 'state') or '{}'}
end
local version = current + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'version', version)
redis.call('HSETNX', KEYS[1], 'offset', 0)
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[5])${cluster
? ''
: `
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[2] .. ':index', 0, ARGV[1])`}
for i = 1, claims do
  idem_put(KEYS[b + 2 * i], KEYS[b + 1 + 2 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i], tonumber(ARGV[7 + 3 * i]), now, tonumber(ARGV[7]))
end
return {1, version, redis.call('HGET', KEYS[1], 'epoch')}`

/** Fills the ordered index from the set once (rooms stored before the index existed); marks it done. */
const BUILD_INDEX = `
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local names = redis.call('SMEMBERS', KEYS[1])
for i = 1, #names, 1000 do
  local args = {}
  for j = i, math.min(i + 999, #names) do
    args[#args + 1] = 0
    args[#args + 1] = names[j]
  end
  redis.call('ZADD', KEYS[2], unpack(args))
end
redis.call('SET', KEYS[3], 1)
return #names`

/** The room (and its history, given KEYS[2]) read at one instant; a room stored before epochs existed gets one (ARGV[1]). */
const LOAD_WITH_HISTORY = `
local room = redis.call('HMGET', KEYS[1], 'state', 'version', 'offset', 'epoch')
if not room[1] then return false end
if not room[4] then
  redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
  room[4] = redis.call('HGET', KEYS[1], 'epoch')
end
if #KEYS < 2 then return {room[1], room[2], room[3], {}, room[4]} end
return {room[1], room[2], room[3], redis.call('LRANGE', KEYS[2], 0, -1), room[4]}`

const INBOX_PUSH = `
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`

/** INBOX_PUSH with an idempotency claim (KEYS[2..3], ARGV[4..8]): {0, record} for a key already used. */
const INBOX_PUSH_IDEMPOTENT = `${IDEMPOTENCY}
local now = tonumber(ARGV[7])
local found = idem_find(KEYS[2], KEYS[3], ARGV[4], now)
if found then return {0, found} end
if tonumber(ARGV[2]) > 0 then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
idem_put(KEYS[2], KEYS[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), now, tonumber(ARGV[8]))
return {1}`

const IDEMPOTENCY_RECALL = `${IDEMPOTENCY}
return idem_find(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))`

/** Redis Cluster: the owner's record of a key, or (none yet) a pending one written with the request's hash. */
const IDEMPOTENCY_CLAIM = `${IDEMPOTENCY}
local found = idem_find(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[4]))
if found then return found end
idem_put(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
return false`

const IDEMPOTENCY_REMEMBER = `${IDEMPOTENCY}
idem_put(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
return 1`

const INBOX_DRAIN = `
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return items`

type AppendReply = [1, number, string] | [0, string]
interface Scripts {
  /** room, history, [rooms: not on a cluster], name, body, keep, epoch */
  sbAppend (...args: Array<string | number>): Promise<AppendReply>
  /** room, history, [rooms], idem, idemExp, name, body, keep, epoch, field, before, after, expiresAt, now, max */
  sbAppendIdem (...args: Array<string | number>): Promise<AppendReply>
  /** numKeys, then keys (room, rooms, claim pairs), then arguments. */
  sbSetState (...args: Array<string | number>): Promise<[number, number, string?]>
  sbLoad (numKeys: number, ...args: string[]): Promise<[string, string, string, string[], string] | null>
  sbInboxPushIdem (key: string, idem: string, idemExp: string, message: string, max: number, ttlMs: number,
    field: string, value: string, expiresAt: number, now: number, maxKeys: number): Promise<[number, string?]>
  sbIdemRecall (idem: string, idemExp: string, field: string, now: number): Promise<string | null>
  sbIdemClaim (idem: string, idemExp: string, field: string, pending: string, expiresAt: number, now: number, max: number): Promise<string | null>
  sbIdemRemember (idem: string, idemExp: string, field: string, value: string, expiresAt: number, now: number, max: number): Promise<number>
  sbInboxPush (key: string, message: string, max: number, ttlMs: number): Promise<number>
  sbInboxDrain (key: string): Promise<string[]>
  sbBuildIndex (rooms: string, index: string, marker: string): Promise<number>
}

type Client = Redis & Scripts

interface Head { state: RoomState, version: number }

interface PendingPatch {
  patch: RoomState
  claim?: IdempotencyClaim
  opts: PatchOptions
  resolve: (result: PatchResult) => void
  reject: (err: Error) => void
}

/** Buckets of the room listing on a Redis Cluster: a page costs this many ranges, whatever the number of rooms. */
export const LISTING_BUCKETS = 16

/** The key names of one deployment (REDIS_KEY_PREFIX); hash-tagged per room, inbox and owner on a Redis Cluster. */
class Keys {
  readonly rooms: string
  readonly roomsIndex: string
  readonly roomsIndexed: string
  constructor (readonly prefix: string, readonly cluster: boolean) {
    this.rooms = `${prefix}rooms`
    this.roomsIndex = `${this.rooms}:index`
    this.roomsIndexed = `${this.rooms}:indexed`
  }

  room (room: string): string { return `${this.prefix}room:${hashTag(this.cluster, 'r', room)}` }
  history (room: string): string { return `${this.room(room)}:history` }
  inbox (clientId: string): string { return `${this.prefix}inbox:${hashTag(this.cluster, 'c', clientId)}` }
  /** The owner's records: on a cluster those claimed across targets. */
  idem (owner: string): string { return `${this.prefix}idem:${hashTag(this.cluster, 'o', owner)}` }
  idemExpiry (owner: string): string { return `${this.idem(owner)}:exp` }
  /** The records committed with writes to a room (on one Redis the owner's, as before). */
  roomIdem (room: string, owner: string): [string, string] {
    const key = this.cluster ? `${this.prefix}idem:{r:${room}}:${owner}` : this.idem(owner)
    return [key, `${key}:exp`]
  }

  inboxIdem (clientId: string, owner: string): [string, string] {
    const key = this.cluster ? `${this.prefix}idem:{c:${clientId}}:${owner}` : this.idem(owner)
    return [key, `${key}:exp`]
  }

  /** Redis Cluster: the listing bucket of a room. */
  bucket (room: string): string {
    let h = 0
    for (let i = 0; i < room.length; i++) h = (h * 31 + room.charCodeAt(i)) >>> 0
    return this.bucketAt(h % LISTING_BUCKETS)
  }

  bucketAt (n: number): string { return `${this.roomsIndex}:{b:${n}}` }
}
const record = (hash: string, resultJson: string) => `{"hash":${JSON.stringify(hash)},"result":${resultJson}}`
function parseRecord (value: string): IdempotencyRecord {
  const parsed = JSON.parse(value) as { hash: string, result: unknown }
  return { hash: parsed.hash, result: parsed.result }
}

/**
 * The store for many instances. Redis is the only truth: offsets come from
 * HINCRBY inside a script; a state patch is merged here (the same RFC 7396 code
 * as SQLite, which cjson could not match: it cannot tell [] from {} and rounds
 * numbers) and committed with a compare-and-set on the version. Patches to one
 * room from this instance run one after another, so only patches from other
 * instances can make a compare-and-set fail, and then it retries on the state
 * the script returned. Patches that queue up behind one in flight are merged
 * together and committed in one compare-and-set (each keeps its own version),
 * so under `appendfsync always` a busy room pays one fsync per batch, not per patch.
 * Every promise resolves after Redis replied to the write.
 */
export class RedisStore implements Store {
  readonly kind = 'redis'
  readonly inbox: InboxStore
  readonly idempotency: IdempotencyStore
  readonly documents: DocumentStore
  readonly lastEvents: LastEventStore
  readonly outbox: OutboxStore
  /** Compare-and-set retries caused by other instances, for measurements. */
  readonly counters = { patchRetries: 0 }
  private readonly client: Client
  private readonly heads = new Map<string, Head>()
  /** Patches waiting for the batch in flight of their room. */
  private readonly pendingPatches = new Map<string, PendingPatch[]>()
  /** Rooms with a batch in flight, and when their queue is empty. */
  private readonly committing = new Map<string, Promise<void>>()
  private closed = false
  private indexed: Promise<unknown> | null = null
  /** Redis Cluster: rooms this process has put in the listing. */
  private readonly listedRooms = new Set<string>()
  private readonly keys: Keys

  constructor (redis: Redis, private readonly opts: RedisStoreOptions) {
    const cluster = opts.cluster === true
    redis.defineCommand('sbAppend', { numberOfKeys: cluster ? 2 : 3, lua: appendScript(false, cluster) })
    redis.defineCommand('sbAppendIdem', { numberOfKeys: cluster ? 4 : 5, lua: appendScript(true, cluster) })
    redis.defineCommand('sbSetState', { lua: setStateScript(cluster) })
    redis.defineCommand('sbIdemClaim', { numberOfKeys: 2, lua: IDEMPOTENCY_CLAIM })
    redis.defineCommand('sbLoad', { lua: LOAD_WITH_HISTORY })
    redis.defineCommand('sbInboxPush', { numberOfKeys: 1, lua: INBOX_PUSH })
    redis.defineCommand('sbInboxPushIdem', { numberOfKeys: 3, lua: INBOX_PUSH_IDEMPOTENT })
    redis.defineCommand('sbIdemRecall', { numberOfKeys: 2, lua: IDEMPOTENCY_RECALL })
    redis.defineCommand('sbIdemRemember', { numberOfKeys: 2, lua: IDEMPOTENCY_REMEMBER })
    redis.defineCommand('sbInboxDrain', { numberOfKeys: 1, lua: INBOX_DRAIN })
    redis.defineCommand('sbBuildIndex', { numberOfKeys: 3, lua: BUILD_INDEX })
    this.client = redis as Client
    this.keys = new Keys(opts.keyPrefix ?? DEFAULT_KEY_PREFIX, cluster)
    this.inbox = this.createInbox()
    this.idempotency = this.createIdempotency()
    const call = <T>(op: () => Promise<T>) => this.call(op)
    this.documents = new RedisDocumentStore(redis, this.keys.prefix, call)
    this.lastEvents = new RedisLastEvents(redis, this.keys.prefix, call)
    this.outbox = new RedisOutbox(redis, this.keys.prefix, randomUUID(), call)
  }

  async loadRoom (room: string): Promise<RoomSnapshot | null> {
    const row = await this.call(() => this.client.sbLoad(1, this.keys.room(room), newEpoch()))
    if (!row) return null
    return { room, state: parseState(room, row[0]), version: Number(row[1] ?? 0), offset: Number(row[2] ?? 0), epoch: row[4] }
  }

  async loadRoomSince (room: string, since: number): Promise<RoomSnapshotWithHistory | null> {
    const row = await this.call(() => this.client.sbLoad(2, this.keys.room(room), this.keys.history(room), newEpoch()))
    if (!row) return null
    const snapshot: RoomSnapshot = { room, state: parseState(room, row[0]), version: Number(row[1] ?? 0), offset: Number(row[2] ?? 0), epoch: row[4] }
    return recoveryWindow(snapshot, since, from => row[3].map(entry => toMessage(room, entry, snapshot.epoch)).filter(m => m.offset > from))
  }

  async appendMessage (room: string, message: NewRoomMessage, historySize: number, claim?: IdempotencyClaim): Promise<RoomMessage> {
    const body = JSON.stringify({ messageId: message.messageId, from: message.from, data: message.data ?? null, timestamp: message.timestamp })
    await this.listed(room)
    return this.exactlyOnce(claim, async () => {
      const cluster = this.keys.cluster
      const rooms: string[] = cluster ? [] : [this.keys.rooms]
      const reply = await this.call(() => {
        if (claim === undefined) {
          return this.client.sbAppend(this.keys.room(room), this.keys.history(room), ...rooms, room, body, historySize, newEpoch())
        }
        const [idem, idemExp] = this.keys.roomIdem(room, claim.owner)
        return this.client.sbAppendIdem(this.keys.room(room), this.keys.history(room), ...rooms, idem, idemExp, room, body, historySize, newEpoch(),
          claim.key, `{"hash":${JSON.stringify(claim.hash)},"result":{"offset":`, `,"messageId":${JSON.stringify(message.messageId)}}}`, claim.expiresAt, Date.now(), this.maxKeys)
      })
      if (reply[0] === 0) throw new DuplicateKeyError(parseRecord(reply[1]))
      return { type: 'room_message', room, offset: Number(reply[1]), ...message, epoch: reply[2] } as RoomMessage
    }, m => record(claim?.hash ?? '', `{"offset":${m.offset},"messageId":${JSON.stringify(m.messageId)}}`))
  }

  /**
   * Redis Cluster: a room is in the listing before its first write from this
   * process (ZADD is idempotent; the listing leaves out names without a room).
   */
  private async listed (room: string): Promise<void> {
    if (!this.keys.cluster || this.listedRooms.has(room)) return
    await this.call(() => this.client.zadd(this.keys.bucket(room), 0, room))
    if (this.listedRooms.size >= 100_000) this.listedRooms.clear()
    this.listedRooms.add(room)
  }

  /**
   * Redis Cluster: the owner's record is claimed before the write (a repeat is
   * answered from it, another body under the key refused), the write commits
   * the target's record in its own script, and the owner's is settled after.
   * On one Redis the write's script holds the owner's record itself.
   */
  private async exactlyOnce<T> (claim: IdempotencyClaim | undefined, write: () => Promise<T>, recordOf: (value: T) => string): Promise<T> {
    if (!this.keys.cluster || claim === undefined) return write()
    const found = await this.call(() => this.client.sbIdemClaim(this.keys.idem(claim.owner), this.keys.idemExpiry(claim.owner), claim.key,
      JSON.stringify({ hash: claim.hash, pending: true }), claim.expiresAt, Date.now(), this.maxKeys))
    if (found !== null) {
      const earlier = JSON.parse(found) as { hash: string, result?: unknown, pending?: boolean }
      // pending with this body: the first one may have been applied before its process died; the target's record tells
      if (earlier.pending !== true || earlier.hash !== claim.hash) throw new DuplicateKeyError({ hash: earlier.hash, result: earlier.result ?? null })
    }
    let settled: string
    let value: T
    try {
      value = await write()
      settled = recordOf(value)
    } catch (err) {
      if (err instanceof DuplicateKeyError) await this.settle(claim, JSON.stringify(err.record))
      throw err
    }
    await this.settle(claim, settled)
    return value
  }

  /** The owner's record, settled; a failure leaves it pending, which the target's record still answers. */
  private async settle (claim: IdempotencyClaim, value: string): Promise<void> {
    await this.call(() => this.client.sbIdemRemember(this.keys.idem(claim.owner), this.keys.idemExpiry(claim.owner), claim.key, value, claim.expiresAt, Date.now(), this.maxKeys)).catch(() => {})
  }

  private get maxKeys (): number {
    return this.opts.idempotencyMaxKeys ?? 1000
  }

  async clearHistory (room: string): Promise<void> {
    await this.call(() => this.client.del(this.keys.history(room)))
  }

  async applyPatch (room: string, patch: RoomState, opts: PatchOptions): Promise<PatchResult> {
    // validated before queueing, so a bad patch fails without waiting its turn
    applyMergePatch({}, patch)
    if (this.closed) throw new StoreUnavailableError('the store is closed')
    await this.listed(room)
    return this.exactlyOnce(opts.claim, () => this.queuePatch(room, patch, opts), result => record(opts.claim?.hash ?? '', `{"version":${result.version}}`))
  }

  private queuePatch (room: string, patch: RoomState, opts: PatchOptions): Promise<PatchResult> {
    return new Promise<PatchResult>((resolve, reject) => {
      let queue = this.pendingPatches.get(room)
      if (!queue) this.pendingPatches.set(room, queue = [])
      queue.push({ patch, opts, claim: opts.claim, resolve, reject })
      if (!this.committing.has(room)) {
        this.committing.set(room, this.commitQueued(room).finally(() => this.committing.delete(room)))
      }
    })
  }

  async listRooms (page?: RoomPage): Promise<RoomSummary[]> {
    if (this.keys.cluster) return this.listBuckets(page)
    const names = page === undefined ? (await this.call(() => this.client.smembers(this.keys.rooms))).sort() : await this.pageOfNames(page)
    const rows = await Promise.all(names.map(name => this.call(() => this.client.hmget(this.keys.room(name), 'version', 'offset'))))
    return names.map((room, i) => ({ room, version: Number(rows[i][0] ?? 0), offset: Number(rows[i][1] ?? 0) }))
  }

  /**
   * Redis Cluster: each bucket's next `limit` names (ZRANGEBYLEX, O(log n +
   * limit) each), merged; names whose room was never written are left out
   * (listed just before a write that did not happen), and the page is
   * filled from further ranges so a full page stays full.
   */
  private async listBuckets (page?: RoomPage): Promise<RoomSummary[]> {
    const limit = page?.limit ?? Infinity
    const prefix = page?.prefix ?? ''
    let after = page?.after ?? ''
    const out: RoomSummary[] = []
    for (;;) {
      const min = prefix !== '' && after < prefix ? `[${prefix}` : after !== '' ? `(${after}` : '-'
      const max = prefix !== '' ? `(${prefix}${ROOM_NAME_END}` : '+'
      const want = limit - out.length
      const ranges = await Promise.all(Array.from({ length: LISTING_BUCKETS }, (_, n) => this.call(() => Number.isFinite(want)
        ? this.client.zrangebylex(this.keys.bucketAt(n), min, max, 'LIMIT', 0, want)
        : this.client.zrangebylex(this.keys.bucketAt(n), min, max))))
      const names = ranges.flat().sort((a, b) => a < b ? -1 : a > b ? 1 : 0).slice(0, want)
      if (names.length === 0) return out
      const rows = await Promise.all(names.map(name => this.call(() => this.client.hmget(this.keys.room(name), 'version', 'offset'))))
      names.forEach((room, i) => { if (rows[i][0] !== null) out.push({ room, version: Number(rows[i][0]), offset: Number(rows[i][1] ?? 0) }) })
      if (out.length >= limit || !Number.isFinite(want)) return out
      after = names[names.length - 1]
    }
  }

  /** A range of the ordered index: ZRANGEBYLEX costs O(log n + limit), whatever the number of rooms. */
  private async pageOfNames (page: RoomPage): Promise<string[]> {
    if (this.indexed === null) {
      this.indexed = this.call(() => this.client.sbBuildIndex(this.keys.rooms, this.keys.roomsIndex, this.keys.roomsIndexed))
      this.indexed.catch(() => { this.indexed = null })
    }
    await this.indexed
    const prefix = page.prefix ?? ''
    const after = page.after ?? ''
    const min = prefix !== '' && after < prefix ? `[${prefix}` : after !== '' ? `(${after}` : '-'
    const max = prefix !== '' ? `(${prefix}${ROOM_NAME_END}` : '+'
    return this.call(() => this.client.zrangebylex(this.keys.roomsIndex, min, max, 'LIMIT', 0, page.limit))
  }

  release (room: string): void {
    if (!this.committing.has(room)) this.heads.delete(room)
  }

  /** Every write is acknowledged by Redis before its promise resolves: nothing waits here but patches in their queues. */
  async flush (): Promise<void> {
    await Promise.allSettled([...this.committing.values()])
  }

  /** The connection belongs to the redis plugin, which quits it after this. */
  async close (): Promise<void> {
    await this.flush()
    this.closed = true
    this.heads.clear()
  }

  /** Commits the room's queued patches, batch after batch, until none is left. */
  private async commitQueued (room: string): Promise<void> {
    for (;;) {
      const batch = this.pendingPatches.get(room)
      if (!batch || batch.length === 0) return
      this.pendingPatches.delete(room)
      try {
        await this.commitBatch(room, batch)
      } catch (err) {
        this.heads.delete(room) // the outcome is unknown: read it again next time
        for (const p of batch) p.reject(err as Error)
        // (a patch already answered as a duplicate ignores this second settlement)
      }
    }
  }

  /** Merges the batch on the room's head and commits it with one compare-and-set, retrying on another instance's write. */
  private async commitBatch (room: string, batch: PendingPatch[]): Promise<void> {
    let cached = this.heads.get(room)
    let head = cached ?? await this.readHead(room)
    for (;;) {
      let state = head.state
      let json = ''
      let version = head.version
      let staleCache = false
      const accepted: Array<{ p: PendingPatch, result: PatchResult }> = []
      const refused: Array<{ p: PendingPatch, err: Error }> = []
      for (const p of batch) {
        if (p.opts.baseVersion !== undefined && p.opts.baseVersion !== version) {
          // the cached head may be behind another instance's writes: only Redis can say it is a conflict
          if (cached) {
            staleCache = true
            break
          }
          refused.push({ p, err: new VersionConflictError(room, version, p.opts.baseVersion) })
          continue
        }
        let patched: { state: RoomState, json: string }
        try {
          patched = patchedState(room, state, p.patch, p.opts.maxBytes)
        } catch (err) {
          if (!(err instanceof StateTooLargeError)) throw err
          refused.push({ p, err })
          continue
        }
        state = patched.state
        json = patched.json
        accepted.push({ p, result: { version: ++version, state } })
      }
      if (staleCache) {
        cached = undefined
        head = await this.readHead(room)
        continue
      }
      if (accepted.length > 0) {
        const keys: string[] = this.keys.cluster ? [this.keys.room(room)] : [this.keys.room(room), this.keys.rooms]
        const args: Array<string | number> = [room, head.version, json, accepted.length, newEpoch(), Date.now(), this.maxKeys]
        const claimed = accepted.filter(a => a.p.claim !== undefined)
        for (const { p, result } of claimed) {
          const claim = p.claim as IdempotencyClaim
          keys.push(...this.keys.roomIdem(room, claim.owner))
          args.push(claim.key, record(claim.hash, `{"version":${result.version}}`), claim.expiresAt)
        }
        const reply = await this.call(() => this.client.sbSetState(keys.length, ...keys, ...args))
        if (reply[0] === 2) {
          // a key already used (on another instance): that patch is answered with its record, the rest merged again
          const duplicate = claimed[Number(reply[1]) - 1].p
          duplicate.reject(new DuplicateKeyError(parseRecord(String(reply[2]))))
          batch = batch.filter(p => p !== duplicate)
          if (batch.length === 0) return
          continue
        }
        if (reply[0] !== 1) {
          // another instance moved the room on: merge again on what the script returned
          this.counters.patchRetries++
          cached = undefined
          head = { version: Number(reply[1]), state: parseState(room, reply[2] ?? '{}') }
          this.heads.set(room, head)
          continue
        }
        this.heads.set(room, { state, version })
        // the room's epoch: the frames of its state count versions within it
        for (const a of accepted) a.result.epoch = String(reply[2])
      }
      for (const { p, result } of accepted) p.resolve(result)
      for (const { p, err } of refused) {
        // a repeat of a patch that was applied (its baseVersion is now behind) gets its record, not the conflict
        const found = p.claim ? await this.recallAt(this.keys.roomIdem(room, p.claim.owner), p.claim.key) : null
        p.reject(found ? new DuplicateKeyError(found) : err)
      }
      return
    }
  }

  private async recallAt ([idem, idemExp]: [string, string], key: string): Promise<IdempotencyRecord | null> {
    const value = await this.call(() => this.client.sbIdemRecall(idem, idemExp, key, Date.now()))
    return value ? parseRecord(value) : null
  }

  private async readHead (room: string): Promise<Head> {
    const [state, version] = await this.call(() => this.client.hmget(this.keys.room(room), 'state', 'version'))
    return { state: state === null ? {} : parseState(room, state), version: Number(version ?? 0) }
  }

  /** Runs one Redis operation; a lost or absent connection becomes StoreUnavailableError at once. */
  private async call<T> (op: () => Promise<T>): Promise<T> {
    if (this.closed) throw new StoreUnavailableError('the store is closed')
    try {
      this.opts.requireReady()
      return await op()
    } catch (err) {
      if (err instanceof InvalidPatchError) throw err
      if (err instanceof RedisUnavailableError) {
        // the redis plugin logged the outage (redis.down) once: callers need not log each refused request
        const unavailable = new StoreUnavailableError(err.message)
        unavailable.reported = true
        throw unavailable
      }
      throw new StoreUnavailableError(`redis did not accept the operation: ${(err as Error).message}`)
    }
  }

  private createIdempotency (): IdempotencyStore {
    return {
      recall: async (owner: string, key: string) => {
        const value = await this.call(() => this.client.sbIdemRecall(this.keys.idem(owner), this.keys.idemExpiry(owner), key, Date.now()))
        return value ? parseRecord(value) : null
      },
      remember: async (claim: IdempotencyClaim, result: unknown) => {
        await this.call(() => this.client.sbIdemRemember(this.keys.idem(claim.owner), this.keys.idemExpiry(claim.owner), claim.key,
          record(claim.hash, JSON.stringify(result ?? null)), claim.expiresAt, Date.now(), this.maxKeys))
      },
      // each write of an owner sweeps its expired records, and an idle owner's keys expire whole
      expire: async () => 0
    }
  }

  private createInbox (): InboxStore {
    const { inboxMax: max, inboxTtlMs: ttlMs } = this.opts
    return {
      push: async (clientId: string, message: DirectMessage, claim?: IdempotencyClaim) => {
        if (claim) {
          const value = record(claim.hash, JSON.stringify(claim.result ?? null))
          await this.exactlyOnce(claim, async () => {
            const [idem, idemExp] = this.keys.inboxIdem(clientId, claim.owner)
            const reply = await this.call(() => this.client.sbInboxPushIdem(this.keys.inbox(clientId), idem, idemExp, JSON.stringify(message), max, ttlMs,
              claim.key, value, claim.expiresAt, Date.now(), this.maxKeys))
            if (reply[0] === 0) throw new DuplicateKeyError(parseRecord(String(reply[1])))
          }, () => value)
          return
        }
        if (max === 0) return
        await this.call(() => this.client.sbInboxPush(this.keys.inbox(clientId), JSON.stringify(message), max, ttlMs))
      },
      drain: async (clientId: string) => {
        const items = await this.call(() => this.client.sbInboxDrain(this.keys.inbox(clientId)))
        const now = Date.now()
        return items.map(item => JSON.parse(item) as DirectMessage).filter(m => Date.parse(m.timestamp) + ttlMs > now)
      },
      // the whole list expires INBOX_TTL_MS after its last push; older entries are dropped when drained
      expire: async () => 0
    }
  }
}

function toMessage (room: string, entry: string, epoch: string): RoomMessage {
  const m = JSON.parse(entry) as Omit<RoomMessage, 'type' | 'room'>
  return { type: 'room_message', room, offset: m.offset, messageId: m.messageId, from: m.from, data: m.data, timestamp: m.timestamp, epoch }
}
