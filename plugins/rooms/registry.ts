import { textFrame, type Session } from '../engine/sessions.js'
import { WsError } from '../native/dispatcher.js'
import type { Broker, Presence, Sequence } from '../cluster/index.js'
import { Sequencer } from '../engine/sequencer.js'
import {
  DuplicateKeyError, InvalidPatchError, StateTooLargeError, StoreUnavailableError, VersionConflictError,
  type IdempotencyClaim, type RoomMessage, type RoomState, type Store
} from '../store/interface.js'
import { newEpoch } from '../store/room-state.js'
import { uuid } from '../core/ids.js'

export interface RoomRegistryOptions {
  /** Messages kept per room for recovery (ROOM_HISTORY_SIZE). */
  historySize: number
  /** Rooms one connection may be in at once (MAX_ROOMS_PER_CONNECTION). */
  maxRoomsPerConnection: number
  /** Largest serialized room state in bytes (ROOM_STATE_MAX_BYTES). */
  stateMaxBytes: number
  /** An empty room leaves memory after this long. */
  evictAfterMs: number
  /** Told the type and local recipients of every broadcast (metrics). */
  onBroadcast?: (type: string, recipients: number) => void
  /**
   * false: room messages are broadcast without a store write, offsets count in
   * memory from the stored one, nothing is kept for recovery [true].
   */
  persistMessages?: boolean
  /** How long a room's message or state frame waits for an earlier one before the gap is filled from the store [500]. */
  gapMs?: number
  /**
   * Told each membership transition decided across the instances (presence):
   * a room's first member anywhere (`room_occupied`), a client's first
   * connection in it anywhere (`member_joined`), its last one
   * (`member_left`, also for the members of a crashed instance), the room's
   * last member anywhere (`room_vacated`). Each fires on one instance only.
   */
  onMembership?: (event: MembershipEvent) => void
  /** The application backend's say on joins and publishes (the proxy hooks), asked here for every door. */
  hooks?: RoomHooks
}

/** Who publishes, as the publish hook is told: a connection of a door, or the HTTP API (no connection). */
export interface PublishCaller { connectionId: string | null, protocol: string }

/**
 * Hooks on the registry's joins and publishes, whichever door they come
 * through; each may throw a WsError to refuse.
 */
export interface RoomHooks {
  /** Before a join: resolves with data for `joined` (undefined: none). */
  join?: (conn: Session, room: string) => Promise<unknown>
  /** Before a publish is stored: resolves with the data to store and broadcast (the one given, or a rewrite). */
  publish?: (caller: PublishCaller & { clientId: string }, room: string, data: unknown, idempotencyKey: string | undefined) => Promise<unknown>
}

/** A membership transition of a native room, cluster-wide (the native webhooks). */
export interface MembershipEvent { type: 'room_occupied' | 'room_vacated' | 'member_joined' | 'member_left', room: string, clientId?: string }

/** The namespace of native rooms in the broker and in presence. */
export const ROOM_NS = 'room'

/** A message published on this instance, and who published it (undefined: a member or the HTTP API). */
export type PublishedListener = (message: RoomMessage, origin: string | undefined) => void

interface Log {
  error (obj: object, msg: string): void
  warn (obj: object, msg: string): void
}

/** The ordered streams of a room: its messages by offset, its state by version, each within the room's epoch. */
type Stream = 'm' | 's'

/** A room in memory: who is in it, by client id, and where its ordered streams are. */
class Room {
  /** clientId → that client's connections in this room. */
  readonly members = new Map<string, Set<Session>>()
  /** Connections joining: the room's frames wait here from before the snapshot is read until just after `joined`. */
  readonly joining = new Map<Session, string[]>()
  emptySince = Date.now()
  /** Each stream's sequencer, for the epoch it counts in. */
  readonly streams = new Map<Stream, { epoch: string, sequencer: Sequencer }>()
  /** The epoch the store had when the room loaded ('' for a room never written: its first epoch counts from 1). */
  readonly storedEpoch: string
  constructor (readonly name: string, public offset = 0, stored: string | undefined = undefined, readonly version = 0, readonly epoch = stored ?? newEpoch()) {
    this.storedEpoch = stored ?? ''
  }
}

export interface JoinedReply {
  type: 'joined'
  room: string
  state: RoomState
  version: number
  offset: number
  members: string[]
  missed: RoomMessage[]
  recovered: boolean
  /** The room's epoch; empty for a room never written. */
  epoch: string
  /** With `recovered: false`: the client's `since` counted in another epoch. */
  reason?: 'epoch_changed'
  /** What the join hook gave this client for the room. */
  data?: unknown
}

export interface RoomDescription {
  room: string
  state: RoomState
  version: number
  offset: number
  /** Empty for a room never written (members only). */
  epoch: string
  members: string[]
}

/**
 * Membership, presence and the room operations of the contract, over a Store.
 * Rooms load lazily (concurrent joins share one load), stay while they have
 * members and are evicted by `sweep` once empty for `evictAfterMs`.
 */
export class RoomRegistry {
  private readonly rooms = new Map<string, Room>()
  private readonly loading = new Map<string, Promise<Room>>()
  private readonly pendingJoins = new WeakMap<Session, Map<string, Promise<unknown>>>()
  private readonly publishedListeners: PublishedListener[] = []
  /** Frames from other instances for rooms being loaded here: offered once the room is in memory. */
  private readonly early = new Map<string, Array<[string, string | undefined, Sequence | undefined]>>()

  constructor (private readonly store: Store, private readonly broker: Broker, private readonly presence: Presence, private readonly opts: RoomRegistryOptions, private readonly log: Log) {
    broker.handle(ROOM_NS, (room, frame, except, sequence) => this.remoteFrame(room, frame, except, sequence))
    // members of a crashed instance: announced once, by the instance whose sweep removed them
    presence.onGone(ROOM_NS, (room, gone, vacated) => {
      for (const { key: clientId } of gone) {
        if (!this.rooms.get(room)?.members.has(clientId)) this.broadcast(room, { type: 'presence', room, event: 'leave', clientId })
        this.opts.onMembership?.({ type: 'member_left', room, clientId })
      }
      if (vacated) this.opts.onMembership?.({ type: 'room_vacated', room })
    })
  }

  /** Sends one serialized frame to the room's members here and on the other instances; returns the connections reached here. */
  deliver (room: string, frame: string, exceptConnectionId?: string, sequence?: { stream: Stream, epoch: string, seq: number }): number {
    const wire = sequence === undefined ? undefined : { stream: `${sequence.stream}@${sequence.epoch}`, seq: sequence.seq }
    // a room frame that cannot cross now reaches the other instances' members through the store:
    // their sequencer fills the gap when the next frame comes (messages), or they rejoin
    this.broker.publish(ROOM_NS, room, frame, exceptConnectionId, wire).catch(() => {})
    return this.ordered(room, frame, exceptConnectionId, wire)
  }

  /** A frame published on another instance: delivered here in its stream's order. */
  private remoteFrame (name: string, frame: string, except: string | undefined, sequence: Sequence | undefined): void {
    const loading = this.early.get(name)
    if (loading !== undefined) {
      loading.push([frame, except, sequence])
      return
    }
    this.ordered(name, frame, except, sequence)
  }

  /**
   * Delivers a frame to the members here; a frame of an ordered stream
   * (`<stream>@<epoch>:<seq>` on the wire) goes through that stream's
   * sequencer, so every instance delivers a room's messages by offset and its
   * state by version, whoever published them. Returns the connections reached
   * (0 for a frame that waits for an earlier one).
   */
  private ordered (name: string, frame: string, except: string | undefined, sequence: Sequence | undefined): number {
    const room = this.rooms.get(name)
    if (room === undefined) return 0
    if (sequence === undefined || this.opts.persistMessages === false) return this.deliverLocally(name, frame, except)
    const at = sequence.stream.indexOf('@')
    const stream = sequence.stream.slice(0, at) as Stream
    const epoch = sequence.stream.slice(at + 1)
    if (stream !== 'm' && stream !== 's') return this.deliverLocally(name, frame, except)
    let current = room.streams.get(stream)
    if (current === undefined || current.epoch !== epoch) {
      // a new epoch (the store was replaced or flushed) counts from its own start
      current?.sequencer.stop()
      // the first frame of the epoch the room loaded in (or of the first epoch of a room never written) counts from the loaded position
      const known = current === undefined && (epoch === room.storedEpoch || room.storedEpoch === '')
      const next = known ? (stream === 'm' ? room.offset : room.version) + 1 : sequence.seq
      current = {
        epoch,
        sequencer: new Sequencer(next, (after, upTo) => this.missing(name, stream, after, upTo), {
          gapMs: this.opts.gapMs,
          onGap: gap => this.log.warn({ event: 'room.gap', room: name, stream: stream === 'm' ? 'messages' : 'state', ...gap }, gap.skipped > 0 ? 'room frames did not arrive and are no longer in the history: the room went on without them' : 'room frames did not arrive in time: delivered from the store')
        })
      }
      room.streams.set(stream, current)
    }
    let reached = 0
    current.sequencer.offer(sequence.seq, () => { reached = this.deliverLocally(name, frame, except) })
    return reached
  }

  /** The room's messages after `after` up to `upTo`, read from the store, to fill a gap (state versions are not kept: none). */
  private async missing (name: string, stream: Stream, after: number, upTo: number): Promise<Array<[number, () => void]>> {
    if (stream !== 'm') return []
    const found = await this.store.loadRoomSince(name, after)
    return (found?.missed ?? []).filter(m => m.offset <= upTo).map(m => [m.offset, () => { this.deliverLocally(name, JSON.stringify(m)) }])
  }

  /**
   * Every message published on this instance (by a member or the HTTP API), once,
   * after it went out to the room's members; with the `origin` its publisher
   * named, so a protocol bridge can skip the messages it published itself.
   */
  onPublished (fn: PublishedListener): void {
    this.publishedListeners.push(fn)
  }

  private published (message: RoomMessage, origin: string | undefined): void {
    for (const fn of this.publishedListeners) fn(message, origin)
  }

  isMember (conn: Session, room: string): boolean {
    return this.rooms.get(room)?.members.get(conn.clientId)?.has(conn) ?? false
  }

  /** Serializes once and sends the same frame to every member; returns the connections reached here. */
  broadcast<M extends { type: string }> (room: string, message: M, except?: Session, sequence?: { stream: Stream, epoch: string, seq: number }): number {
    const recipients = this.deliver(room, JSON.stringify(message), except?.id, sequence)
    this.opts.onBroadcast?.(message.type, recipients)
    return recipients
  }

  /** Rooms with members, memberships (client and room pairs) and rooms held in memory. */
  stats (): { active: number, members: number, loaded: number } {
    let active = 0
    let members = 0
    for (const room of this.rooms.values()) {
      if (room.members.size > 0) active++
      members += room.members.size
    }
    return { active, members, loaded: this.rooms.size }
  }

  /** `hook: false`: a join the backend already decided (the connect hook's rooms), not asked again. */
  async join (conn: Session, name: string, since?: number, epoch?: string, opts: { hook?: boolean } = {}): Promise<JoinedReply | undefined> {
    const pending = this.pendingJoinsOf(conn)
    if (!conn.rooms.has(name) && !pending.has(name)) {
      let count = conn.rooms.size
      for (const room of pending.keys()) if (!conn.rooms.has(room)) count++
      if (count >= this.opts.maxRoomsPerConnection) {
        throw new WsError('room_limit', `a connection may be in at most ${this.opts.maxRoomsPerConnection} rooms`, { limit: this.opts.maxRoomsPerConnection })
      }
    }
    const hook = opts.hook === false ? undefined : this.opts.hooks?.join
    // a publish right after the join waits for it, the hook's answer included
    const joining = hook === undefined ? this.admit(conn, name, since, epoch) : this.admitHooked(hook, conn, name, since, epoch)
    pending.set(name, joining)
    try {
      return await joining
    } finally {
      if (pending.get(name) === joining) pending.delete(name)
      // an idle connection keeps no empty Map (S1: bytes per connection)
      if (pending.size === 0 && this.pendingJoins.get(conn) === pending) this.pendingJoins.delete(conn)
    }
  }

  /** The join hook first (it may refuse, or give data for `joined`), then the join. */
  private async admitHooked (hook: NonNullable<RoomHooks['join']>, conn: Session, name: string, since: number | undefined, epoch: string | undefined): Promise<JoinedReply | undefined> {
    const data = await hook(conn, name)
    if (!conn.open) return undefined
    const reply = await this.admit(conn, name, since, epoch)
    if (reply !== undefined && data !== undefined) reply.data = data
    return reply
  }

  async leave (conn: Session, name: string): Promise<{ type: 'left', room: string }> {
    await this.joinSettled(conn, name)
    if (!this.isMember(conn, name)) throw notInRoom(name)
    this.removeMember(conn, name)
    return { type: 'left', room: name }
  }

  /** The connection leaves a room at once, if it is a member (its refreshed token no longer allows it); the others see its presence leave. */
  evict (conn: Session, name: string): boolean {
    if (!this.isMember(conn, name)) return false
    this.removeMember(conn, name)
    return true
  }

  /** A connection is gone: it leaves every room it was in. */
  leaveAll (conn: Session): void {
    for (const name of [...conn.rooms]) this.removeMember(conn, name)
  }

  /** Throws `not_in_room` unless the connection is a member (after any join of it still in flight). */
  async requireMember (conn: Session, name: string): Promise<void> {
    await this.joinSettled(conn, name)
    if (!this.isMember(conn, name)) throw notInRoom(name)
  }

  /**
   * `origin`: who publishes, told to onPublished listeners (a bridge names itself; members and the HTTP API do not).
   * `by`: the connection (or the HTTP API) publishing, for the publish hook, which is asked
   * before anything is stored unless a bridge publishes (its door asked already).
   * With a `claim`, the store commits its idempotency record with the message, or
   * throws DuplicateKeyError (nothing published) when the key was used.
   */
  async publish (from: string, name: string, data: unknown, opts: { claim?: IdempotencyClaim, origin?: string, by?: PublishCaller } = {}): Promise<{ offset: number, messageId: string, delivered: number }> {
    const { claim, origin } = opts
    const hook = this.opts.hooks?.publish
    if (hook !== undefined && origin === undefined) {
      // a repeat of a used key is answered from its record, not asked of the backend again (the commit still checks atomically)
      if (claim) await this.storeCall(name, () => this.refuseUsed(claim))
      const by = opts.by ?? { connectionId: null, protocol: 'http' }
      data = await hook({ clientId: from, ...by }, name, data, claim?.key)
    }
    const room = this.opts.persistMessages === false ? this.rooms.get(name) : undefined
    if (room) {
      // nothing is committed for these rooms: the record is written on its own, after the broadcast
      if (claim) await this.storeCall(name, () => this.refuseUsed(claim))
      const message: RoomMessage = { type: 'room_message', room: name, offset: ++room.offset, messageId: uuid(), from, data, timestamp: new Date().toISOString(), epoch: room.epoch }
      const delivered = this.broadcast(name, message)
      this.published(message, origin)
      if (claim) await this.storeCall(name, () => this.store.idempotency.remember(claim, { offset: message.offset, messageId: message.messageId }))
      return { offset: message.offset, messageId: message.messageId, delivered }
    }
    const message = await this.storeCall(name, () => this.store.appendMessage(name, {
      messageId: uuid(), from, data, timestamp: new Date().toISOString()
    }, this.opts.historySize, claim)).finally(() => this.releaseIfNotLoaded(name))
    const delivered = this.broadcast(name, message, undefined, { stream: 'm', epoch: message.epoch, seq: message.offset })
    this.published(message, origin)
    return { offset: message.offset, messageId: message.messageId, delivered }
  }

  /** With a claim: as `publish`. */
  async update (from: string, name: string, patch: RoomState, baseVersion?: number, claim?: IdempotencyClaim): Promise<{ version: number }> {
    const { version, epoch } = await this.storeCall(name, () => this.store.applyPatch(name, patch, { baseVersion, maxBytes: this.opts.stateMaxBytes, claim }))
      .finally(() => this.releaseIfNotLoaded(name))
    this.broadcast(name, { type: 'state', room: name, version, patch, from }, undefined, epoch === undefined ? undefined : { stream: 's', epoch, seq: version })
    return { version }
  }

  /**
   * A page of the room's kept history, oldest first: the `limit` messages just
   * before offset `before` (the newest ones when absent). `next` is the
   * `before` of the previous page, when older kept messages exist.
   */
  async history (name: string, opts: { before?: number, limit: number }): Promise<{ messages: RoomMessage[], next?: number }> {
    const snapshot = await this.storeCall(name, () => this.store.loadRoomSince(name, 0)).finally(() => this.releaseIfNotLoaded(name))
    if (!snapshot) return { messages: [] }
    const before = opts.before ?? Infinity
    const older = snapshot.missed.filter(m => m.offset < before)
    const messages = older.slice(Math.max(0, older.length - opts.limit))
    return messages.length < older.length ? { messages, next: messages[0].offset } : { messages }
  }

  /** Removes the room's history and tells its members, on every instance, with `history_cleared`. */
  async clearHistory (name: string, by: string): Promise<{ offset: number }> {
    await this.storeCall(name, () => this.store.clearHistory(name))
    const snapshot = await this.storeCall(name, () => this.store.loadRoom(name)).finally(() => this.releaseIfNotLoaded(name))
    const offset = snapshot?.offset ?? 0
    this.broadcast(name, { type: 'history_cleared', room: name, offset, by, timestamp: new Date().toISOString() })
    return { offset }
  }

  /** The room as the HTTP API shows it, or null for a room never used. */
  async describe (name: string): Promise<RoomDescription | null> {
    const snapshot = await this.storeCall(name, () => this.store.loadRoom(name)).finally(() => this.releaseIfNotLoaded(name))
    const members = await this.allMembersOf(name)
    if (!snapshot && members.length === 0) return null
    return { room: name, state: snapshot?.state ?? {}, version: snapshot?.version ?? 0, offset: snapshot?.offset ?? 0, epoch: snapshot?.epoch ?? '', members }
  }

  /**
   * One page of the rooms (stored, or with members here) in name order, after
   * `after`, limited to the names `allowed` (a token's `rooms` claim, parsed:
   * exact names or prefixes; null = all). Each allowed range is one keyset query of at most
   * limit+1 rows on the store's ordered index, so a page costs the same with any
   * number of rooms. `next` is the cursor of the following page, if there is one.
   */
  async listPage (opts: { after?: string, limit: number, allowed: ReadonlyArray<{ name: string, prefix: boolean }> | null }): Promise<{ rooms: Array<{ room: string, members: number, version: number }>, next?: string }> {
    const { after, limit } = opts
    const ranges = opts.allowed === null
      ? [{ prefix: '', exact: false }]
      : opts.allowed.map(p => ({ prefix: p.name, exact: !p.prefix }))
    const found = new Map<string, { room: string, members: number, version: number }>()
    for (const { prefix, exact } of ranges) {
      // an exact name is the first one of its own prefix range, if it is stored
      const rows = await this.storeCall(null, () => this.store.listRooms({ after, prefix, limit: exact ? 1 : limit + 1 }))
      for (const r of rows) if (!exact || r.room === prefix) found.set(r.room, { room: r.room, members: 0, version: r.version })
    }
    const allowed = (name: string) => ranges.some(({ prefix, exact }) => exact ? name === prefix : name.startsWith(prefix))
    for (const room of this.rooms.values()) {
      if (room.members.size === 0 || (after !== undefined && room.name <= after) || !allowed(room.name)) continue
      const entry = found.get(room.name) ?? { room: room.name, members: 0, version: 0 }
      entry.members = room.members.size
      found.set(room.name, entry)
    }
    const sorted = [...found.values()].sort((a, b) => a.room < b.room ? -1 : a.room > b.room ? 1 : 0)
    if (sorted.length <= limit) return { rooms: sorted }
    const rooms = sorted.slice(0, limit)
    return { rooms, next: rooms[rooms.length - 1].room }
  }

  /** Drops rooms empty for longer than evictAfterMs; returns how many. */
  sweep (now = Date.now()): number {
    let evicted = 0
    for (const [name, room] of this.rooms) {
      if (room.members.size === 0 && now - room.emptySince >= this.opts.evictAfterMs) {
        for (const { sequencer } of room.streams.values()) sequencer.stop()
        this.rooms.delete(name)
        this.store.release(name)
        evicted++
      }
    }
    return evicted
  }

  private async admit (conn: Session, name: string, since?: number, epoch?: string): Promise<JoinedReply | undefined> {
    // subscribed before the snapshot is read, so nothing published after it is missed
    let retained = false
    if (!this.isMember(conn, name)) {
      await this.storeCall(name, () => this.broker.subscribe(ROOM_NS, name))
      retained = true
    }
    try {
      return await this.admitRetained(conn, name, since, epoch, () => { retained = false })
    } finally {
      if (retained) this.broker.unsubscribe(ROOM_NS, name)
    }
  }

  /**
   * No gap on join: from before the snapshot is read, the room's frames for this
   * connection are kept; once it is read, the connection becomes a member in the
   * same turn, and the kept frames newer than the snapshot go out right after
   * `joined` (the dispatcher sends it in this turn's microtasks, before any
   * setImmediate), older ones are dropped (they are in the snapshot or `missed`).
   */
  private async admitRetained (conn: Session, name: string, since: number | undefined, epoch: string | undefined, keepRetained: () => void): Promise<JoinedReply | undefined> {
    let room = await this.open(name)
    // read before the snapshot: a list of members need not be of the same instant
    const elsewhere = [...(await this.storeCall(name, () => this.presence.members(ROOM_NS, name))).keys()]
    room = await this.open(name)
    const alreadyMember = room.members.get(conn.clientId)?.has(conn) ?? false
    const kept: string[] = []
    if (!alreadyMember) room.joining.set(conn, kept)
    let withHistory: Awaited<ReturnType<Store['loadRoomSince']>> = null
    let epochChanged = false
    let snapshot: Awaited<ReturnType<Store['loadRoom']>> = null
    try {
      withHistory = since === undefined ? null : await this.storeCall(name, () => this.store.loadRoomSince(name, since))
      // `since` counted in another history: what this one holds, from its start
      if (withHistory !== null && since !== undefined && since > 0 && epoch !== undefined && epoch !== withHistory.epoch) {
        epochChanged = true
        withHistory = await this.storeCall(name, () => this.store.loadRoomSince(name, 0))
      }
      snapshot = since === undefined ? await this.storeCall(name, () => this.store.loadRoom(name)) : withHistory
    } catch (err) {
      if (room.joining.get(conn) === kept) room.joining.delete(conn)
      throw err
    }
    // gone while the room loaded: nothing to join, nobody to answer
    if (!conn.open) {
      if (room.joining.get(conn) === kept) room.joining.delete(conn)
      return undefined
    }
    // an empty room may have been swept while this join waited
    if (this.rooms.get(name) !== room) this.rooms.set(name, room)
    let connections = room.members.get(conn.clientId)
    const newMember = !connections
    if (!connections) {
      connections = new Set()
      room.members.set(conn.clientId, connections)
    }
    if (!connections.has(conn)) keepRetained()
    connections.add(conn)
    conn.rooms.add(name)
    if (newMember) {
      this.broadcast(name, { type: 'presence', room: name, event: 'join', clientId: conn.clientId }, conn)
      // a member for every instance before its `joined`, as on one node: a join
      // anywhere after it lists this client; frames meanwhile are kept (joining)
      if (room.members.size === 1 && await this.presence.occupy(ROOM_NS, name).catch(() => false)) this.opts.onMembership?.({ type: 'room_occupied', room: name })
      if (await this.presence.join(ROOM_NS, name, conn.clientId, undefined).catch(() => 'present') === 'added') this.opts.onMembership?.({ type: 'member_joined', room: name, clientId: conn.clientId })
    }
    if (room.joining.get(conn) === kept) {
      const offset = snapshot?.offset ?? 0
      const version = snapshot?.version ?? 0
      setImmediate(() => this.endJoin(room, conn, kept, offset, version))
    }

    let missed: RoomMessage[] = []
    let recovered = false
    if (since !== undefined) {
      if (withHistory === null) {
        // a room never written: nothing was missed unless the client claims an offset
        recovered = since === 0
      } else {
        missed = withHistory.missed
        recovered = withHistory.complete && !epochChanged
      }
    }
    const reply: JoinedReply = {
      type: 'joined',
      room: name,
      state: snapshot?.state ?? {},
      version: snapshot?.version ?? 0,
      offset: snapshot?.offset ?? 0,
      members: [...new Set([...room.members.keys(), ...elsewhere])],
      missed,
      recovered,
      epoch: snapshot?.epoch ?? ''
    }
    if (epochChanged) reply.reason = 'epoch_changed'
    return reply
  }

  /** After `joined`: the frames kept during the join that the snapshot did not include, then live delivery. */
  private endJoin (room: Room, conn: Session, kept: string[], offset: number, version: number): void {
    if (room.joining.get(conn) !== kept) return
    room.joining.delete(conn)
    if (!this.isMember(conn, room.name)) return
    for (const frame of kept) {
      const m = JSON.parse(frame) as { type: string, offset?: number, version?: number }
      if (m.type === 'room_message' && (m.offset ?? 0) <= offset) continue
      if (m.type === 'state' && (m.version ?? 0) <= version) continue
      conn.sendRaw(frame)
    }
  }

  /** The room in memory, loading it once however many joins ask at the same time. */
  private open (name: string): Promise<Room> {
    const room = this.rooms.get(name)
    if (room) return Promise.resolve(room)
    let loading = this.loading.get(name)
    if (!loading) {
      loading = this.storeCall(name, () => this.store.loadRoom(name)).then(snapshot => {
        const loaded = new Room(name, snapshot?.offset ?? 0, snapshot?.epoch, snapshot?.version ?? 0)
        this.rooms.set(name, loaded)
        // frames from other instances that came while the room loaded, in the order they came
        for (const [frame, except, sequence] of this.early.get(name) ?? []) this.ordered(name, frame, except, sequence)
        return loaded
      }).finally(() => {
        this.loading.delete(name)
        this.early.delete(name)
      })
      this.early.set(name, [])
      this.loading.set(name, loading)
    }
    return loading
  }

  private removeMember (conn: Session, name: string): void {
    conn.rooms.delete(name)
    const room = this.rooms.get(name)
    const connections = room?.members.get(conn.clientId)
    if (!room || !connections?.delete(conn)) return
    room.joining.delete(conn)
    this.broker.unsubscribe(ROOM_NS, name)
    if (connections.size > 0) return
    room.members.delete(conn.clientId)
    const membership = this.opts.onMembership
    const clientId = conn.clientId
    this.presence.leave(ROOM_NS, name, clientId).then(last => { if (last) membership?.({ type: 'member_left', room: name, clientId }) }, () => false)
    if (room.members.size === 0) {
      room.emptySince = Date.now()
      this.presence.vacate(ROOM_NS, name).then(last => { if (last) membership?.({ type: 'room_vacated', room: name }) }, () => false)
    }
    this.broadcast(name, { type: 'presence', room: name, event: 'leave', clientId: conn.clientId })
  }

  /** A room written or read over HTTP without members here need not stay cached in the store. */
  private releaseIfNotLoaded (name: string): void {
    if (!this.rooms.has(name) && !this.loading.has(name)) this.store.release(name)
  }

  private membersOf (name: string): string[] {
    return [...(this.rooms.get(name)?.members.keys() ?? [])]
  }

  /** Members here, plus those on the other instances. */
  private async allMembersOf (name: string): Promise<string[]> {
    const elsewhere = await this.storeCall(name, () => this.presence.members(ROOM_NS, name))
    return [...new Set([...this.membersOf(name), ...elsewhere.keys()])]
  }

  private deliverLocally (name: string, frame: string, exceptConnectionId?: string): number {
    const room = this.rooms.get(name)
    if (!room) return 0
    // framed once for all members: given a string, ws would encode it and build a header for every socket
    const data = textFrame(frame)
    let reached = 0
    const joining = room.joining
    for (const connections of room.members.values()) {
      for (const conn of connections) {
        if (conn.id !== exceptConnectionId && !(joining.size > 0 && joining.has(conn)) && conn.sendFrame(data)) reached++
      }
    }
    if (joining.size > 0) {
      for (const [conn, kept] of joining) {
        if (conn.id !== exceptConnectionId && conn.open) {
          kept.push(frame)
          reached++
        }
      }
    }
    return reached
  }

  private pendingJoinsOf (conn: Session): Map<string, Promise<unknown>> {
    let pending = this.pendingJoins.get(conn)
    if (!pending) {
      pending = new Map()
      this.pendingJoins.set(conn, pending)
    }
    return pending
  }

  private async refuseUsed (claim: IdempotencyClaim): Promise<void> {
    const found = await this.store.idempotency.recall(claim.owner, claim.key)
    if (found) throw new DuplicateKeyError(found)
  }

  /** Lets a publish sent right after its join wait for that join instead of failing. */
  private async joinSettled (conn: Session, name: string): Promise<void> {
    const joining = this.pendingJoins.get(conn)?.get(name)
    if (joining) await joining.catch(() => undefined)
  }

  /** Runs a store operation, turning its failures into contract errors. */
  private async storeCall<T> (room: string | null, op: () => Promise<T>): Promise<T> {
    try {
      return await op()
    } catch (err) {
      if (err instanceof DuplicateKeyError) throw err
      if (err instanceof VersionConflictError) {
        throw new WsError('version_conflict', err.message, { currentVersion: err.currentVersion })
      }
      if (err instanceof StateTooLargeError) {
        throw new WsError('state_too_large', err.message, { bytes: err.bytes, maxBytes: err.maxBytes })
      }
      if (err instanceof InvalidPatchError) throw new WsError('invalid_message', err.message)
      // a failed commit is logged once per interval by the store's health, not once per caller
      if (!(err instanceof StoreUnavailableError && err.reported)) this.log.error({ event: 'store.operation_failed', room, err }, 'a store operation failed')
      const cause = err instanceof StoreUnavailableError ? `: ${err.message}` : ''
      throw new WsError('unavailable', room === null ? `the room store is unavailable${cause}; retry later` : `room ${room} is unavailable${cause}; retry later`)
    }
  }
}

function notInRoom (room: string): WsError {
  return new WsError('not_in_room', `not a member of room ${room}; join it first`)
}
