import type { Redis } from 'ioredis'
import type { DirectMessage } from '../../protocol/frames.js'
import { applyMergePatch } from '../../protocol/merge-patch.js'
import { parseState, patchedState, recoveryWindow } from './room-state.js'
import { KEY_PREFIX, RedisUnavailableError } from '../core/redis.js'
import {
  InvalidPatchError, StateTooLargeError, StoreUnavailableError, VersionConflictError,
  type NewRoomMessage, type PatchOptions, type PatchResult, type RoomMessage, type RoomSnapshot,
  type RoomSnapshotWithHistory, type RoomState, type RoomSummary, type Store, type RoomPage, ROOM_NAME_END, type InboxStore
} from './interface.js'

export interface RedisStoreOptions {
  inboxMax: number
  inboxTtlMs: number
  /** Throws when Redis is not reachable, so an operation fails at once instead of waiting. */
  requireReady: () => void
}

/*
 * Keys:
 *   sb:room:<room>          hash  state (JSON), version, offset
 *   sb:room:<room>:history  list  the last ROOM_HISTORY_SIZE messages, oldest first
 *   sb:rooms                set   every stored room name
 *   sb:rooms:index          zset  the same names, score 0: ordered for ZRANGEBYLEX pages
 *   sb:inbox:<clientId>     list  queued direct messages, expiring INBOX_TTL_MS after the last push
 *
 * Every write is one Lua script: Redis runs it alone, so the read of the
 * current offset/version and the write of the next one cannot interleave with
 * another instance's. WATCH/MULTI would give the same result with a retry loop
 * and two or three round trips per write under contention; a script is one.
 */

/** Appends a message: the next offset, the history entry (trimmed), the room listed. */
const APPEND = `
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('HSETNX', KEYS[1], 'state', '{}')
redis.call('HSETNX', KEYS[1], 'version', 0)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[3] .. ':index', 0, ARGV[1])
local keep = tonumber(ARGV[3])
if keep > 0 then
  redis.call('RPUSH', KEYS[2], '{"offset":' .. offset .. ',' .. string.sub(ARGV[2], 2))
  redis.call('LTRIM', KEYS[2], -keep, -1)
else
  redis.call('DEL', KEYS[2])
end
return offset`

/**
 * Sets a state computed by the caller only if the room is still at the version
 * the caller computed it from (compare-and-set); otherwise returns the current
 * version and state so the caller can recompute without another round trip.
 */
const SET_STATE_IF_VERSION = `
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[2]) then
  return {0, current, redis.call('HGET', KEYS[1], 'state') or '{}'}
end
local version = current + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'version', version)
redis.call('HSETNX', KEYS[1], 'offset', 0)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[2] .. ':index', 0, ARGV[1])
return {1, version}`

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

/** The room and its history, read at one instant. */
const LOAD_WITH_HISTORY = `
local room = redis.call('HMGET', KEYS[1], 'state', 'version', 'offset')
if not room[1] then return false end
return {room[1], room[2], room[3], redis.call('LRANGE', KEYS[2], 0, -1)}`

const INBOX_PUSH = `
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`

const INBOX_DRAIN = `
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return items`

interface Scripts {
  sbAppend (room: string, history: string, rooms: string, name: string, body: string, keep: number): Promise<number>
  sbSetState (room: string, rooms: string, name: string, expected: number, state: string, patches: number): Promise<[number, number, string?]>
  sbLoad (room: string, history: string): Promise<[string, string, string, string[]] | null>
  sbInboxPush (key: string, message: string, max: number, ttlMs: number): Promise<number>
  sbInboxDrain (key: string): Promise<string[]>
  sbBuildIndex (rooms: string, index: string, marker: string): Promise<number>
}

type Client = Redis & Scripts

interface Head { state: RoomState, version: number }

interface PendingPatch {
  patch: RoomState
  opts: PatchOptions
  resolve: (result: PatchResult) => void
  reject: (err: Error) => void
}

const roomKey = (room: string) => `${KEY_PREFIX}room:${room}`
const historyKey = (room: string) => `${KEY_PREFIX}room:${room}:history`
const ROOMS = `${KEY_PREFIX}rooms`
const ROOMS_INDEX = `${ROOMS}:index`
const ROOMS_INDEXED = `${ROOMS}:indexed`
const inboxKey = (clientId: string) => `${KEY_PREFIX}inbox:${clientId}`

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

  constructor (redis: Redis, private readonly opts: RedisStoreOptions) {
    redis.defineCommand('sbAppend', { numberOfKeys: 3, lua: APPEND })
    redis.defineCommand('sbSetState', { numberOfKeys: 2, lua: SET_STATE_IF_VERSION })
    redis.defineCommand('sbLoad', { numberOfKeys: 2, lua: LOAD_WITH_HISTORY })
    redis.defineCommand('sbInboxPush', { numberOfKeys: 1, lua: INBOX_PUSH })
    redis.defineCommand('sbInboxDrain', { numberOfKeys: 1, lua: INBOX_DRAIN })
    redis.defineCommand('sbBuildIndex', { numberOfKeys: 3, lua: BUILD_INDEX })
    this.client = redis as Client
    this.inbox = this.createInbox()
  }

  async loadRoom (room: string): Promise<RoomSnapshot | null> {
    const [state, version, offset] = await this.call(() => this.client.hmget(roomKey(room), 'state', 'version', 'offset'))
    if (state === null) return null
    return { room, state: parseState(room, state), version: Number(version ?? 0), offset: Number(offset ?? 0) }
  }

  async loadRoomSince (room: string, since: number): Promise<RoomSnapshotWithHistory | null> {
    const row = await this.call(() => this.client.sbLoad(roomKey(room), historyKey(room)))
    if (!row) return null
    const snapshot: RoomSnapshot = { room, state: parseState(room, row[0]), version: Number(row[1] ?? 0), offset: Number(row[2] ?? 0) }
    return recoveryWindow(snapshot, since, from => row[3].map(entry => toMessage(room, entry)).filter(m => m.offset > from))
  }

  async appendMessage (room: string, message: NewRoomMessage, historySize: number): Promise<RoomMessage> {
    const body = JSON.stringify({ messageId: message.messageId, from: message.from, data: message.data ?? null, timestamp: message.timestamp })
    const offset = await this.call(() => this.client.sbAppend(roomKey(room), historyKey(room), ROOMS, room, body, historySize))
    return { type: 'room_message', room, offset: Number(offset), ...message }
  }

  async clearHistory (room: string): Promise<void> {
    await this.call(() => this.client.del(historyKey(room)))
  }

  async applyPatch (room: string, patch: RoomState, opts: PatchOptions): Promise<PatchResult> {
    // validated before queueing, so a bad patch fails without waiting its turn
    applyMergePatch({}, patch)
    if (this.closed) throw new StoreUnavailableError('the store is closed')
    return new Promise<PatchResult>((resolve, reject) => {
      let queue = this.pendingPatches.get(room)
      if (!queue) this.pendingPatches.set(room, queue = [])
      queue.push({ patch, opts, resolve, reject })
      if (!this.committing.has(room)) {
        this.committing.set(room, this.commitQueued(room).finally(() => this.committing.delete(room)))
      }
    })
  }

  async listRooms (page?: RoomPage): Promise<RoomSummary[]> {
    const names = page === undefined ? (await this.call(() => this.client.smembers(ROOMS))).sort() : await this.pageOfNames(page)
    const rows = await Promise.all(names.map(name => this.call(() => this.client.hmget(roomKey(name), 'version', 'offset'))))
    return names.map((room, i) => ({ room, version: Number(rows[i][0] ?? 0), offset: Number(rows[i][1] ?? 0) }))
  }

  /** A range of the ordered index: ZRANGEBYLEX costs O(log n + limit), whatever the number of rooms. */
  private async pageOfNames (page: RoomPage): Promise<string[]> {
    if (this.indexed === null) {
      this.indexed = this.call(() => this.client.sbBuildIndex(ROOMS, ROOMS_INDEX, ROOMS_INDEXED))
      this.indexed.catch(() => { this.indexed = null })
    }
    await this.indexed
    const prefix = page.prefix ?? ''
    const after = page.after ?? ''
    const min = prefix !== '' && after < prefix ? `[${prefix}` : after !== '' ? `(${after}` : '-'
    const max = prefix !== '' ? `(${prefix}${ROOM_NAME_END}` : '+'
    return this.call(() => this.client.zrangebylex(ROOMS_INDEX, min, max, 'LIMIT', 0, page.limit))
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
        const reply = await this.call(() => this.client.sbSetState(roomKey(room), ROOMS, room, head.version, json, accepted.length))
        if (reply[0] !== 1) {
          // another instance moved the room on: merge again on what the script returned
          this.counters.patchRetries++
          cached = undefined
          head = { version: Number(reply[1]), state: parseState(room, reply[2] ?? '{}') }
          this.heads.set(room, head)
          continue
        }
        this.heads.set(room, { state, version })
      }
      for (const { p, result } of accepted) p.resolve(result)
      for (const { p, err } of refused) p.reject(err)
      return
    }
  }

  private async readHead (room: string): Promise<Head> {
    const [state, version] = await this.call(() => this.client.hmget(roomKey(room), 'state', 'version'))
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

  private createInbox (): InboxStore {
    const { inboxMax: max, inboxTtlMs: ttlMs } = this.opts
    return {
      push: async (clientId: string, message: DirectMessage) => {
        if (max === 0) return
        await this.call(() => this.client.sbInboxPush(inboxKey(clientId), JSON.stringify(message), max, ttlMs))
      },
      drain: async (clientId: string) => {
        const items = await this.call(() => this.client.sbInboxDrain(inboxKey(clientId)))
        const now = Date.now()
        return items.map(item => JSON.parse(item) as DirectMessage).filter(m => Date.parse(m.timestamp) + ttlMs > now)
      },
      // the whole list expires INBOX_TTL_MS after its last push; older entries are dropped when drained
      expire: async () => 0
    }
  }
}

function toMessage (room: string, entry: string): RoomMessage {
  const m = JSON.parse(entry) as Omit<RoomMessage, 'type' | 'room'>
  return { type: 'room_message', room, offset: m.offset, messageId: m.messageId, from: m.from, data: m.data, timestamp: m.timestamp }
}
