import { Emitter } from './emitter.js'
import { applyMergePatch } from '../protocol/merge-patch.js'
import type { ExecResult, JsonObject, Joined, Presence, PublishAck, RoomMessage, StateChange, UpdateAck } from '../protocol/frames.js'

export interface StateEvent extends StateChange {
  /** The room's whole state after the patch. */
  state: JsonObject
}

export interface PresenceEvent extends Presence {
  /** Every member after the change. */
  members: string[]
}

export interface GapEvent {
  room: string
  /** First and last offsets the application will never see (inclusive). */
  from: number
  to: number
}

export interface RecoveredEvent {
  room: string
  /** Messages delivered from the server's history while rejoining. */
  missed: number
}

export interface RoomEvents<T> {
  message: RoomMessage<T>
  state: StateEvent
  presence: PresenceEvent
  exec_result: ExecResult
  /** A rejoin (or a join with `since`) got every message after the last one seen. */
  recovered: RecoveredEvent
  /** Some messages are gone from the server's history: they will not be delivered. */
  gap: GapEvent
  /**
   * The room's history started again (a new `epoch`: the server's store was
   * replaced, or its offsets went backwards): counting starts again from
   * `offset`; with an epoch change, what the new history holds is delivered next.
   */
  reset: { room: string, previousOffset: number, offset: number }
  /** The membership ended (after `leave()`, or when a rejoin was refused). */
  left: { room: string, error?: Error }
}

/** What a room needs from its client. */
export interface RoomHost {
  readonly clientId: string | undefined
  publish (room: Room<never>, data: unknown): Promise<PublishAck>
  request<R> (frame: JsonObject): Promise<R>
  leave (room: Room<never>): Promise<void>
}

type RoomEvent = RoomMessage | StateChange | Presence | ExecResult

/**
 * A joined room. It delivers each room message once, in offset order, across
 * reconnects; keeps the shared state, its version and the member list current.
 */
export class Room<T = unknown> extends Emitter<RoomEvents<T>> {
  state: JsonObject = {}
  version = 0
  /** Highest offset delivered to the application; undefined before the first join (without `since`). */
  offset: number | undefined
  /** The room's epoch the offsets count in (from `joined` and each `room_message`); empty while unknown. */
  epoch = ''
  readonly members = new Set<string>()
  /** A membership is confirmed on the current connection. */
  joined = false
  /** `leave()` was called or the server refused the membership: nothing more is delivered. */
  closed = false
  /** The last (re)join delivered every message after the previous offset. */
  lastJoinComplete = true
  /** Settles once the first join is answered. */
  readonly ready: Promise<void>
  private buffer: RoomEvent[] | null = []
  private settleReady!: { resolve: () => void, reject: (err: Error) => void }
  private everJoined = false

  constructor (private readonly host: RoomHost, readonly name: string, since?: number) {
    super()
    this.offset = since
    this.ready = new Promise((resolve, reject) => { this.settleReady = { resolve, reject } })
    // the caller of join() handles the rejection; this keeps it from being reported twice
    this.ready.catch(() => {})
  }

  publish (data: T): Promise<PublishAck> {
    return this.host.publish(this as Room<never>, data)
  }

  /** Applies an RFC 7396 merge patch to the shared state; with `baseVersion`, fails with `version_conflict` if it moved. */
  update (patch: JsonObject, opts: { baseVersion?: number } = {}): Promise<UpdateAck> {
    const frame: JsonObject = { type: 'update', room: this.name, patch }
    if (opts.baseVersion !== undefined) frame.baseVersion = opts.baseVersion
    return this.host.request<UpdateAck>(frame)
  }

  /** Runs JavaScript on the server's sandbox; every member gets the `exec_result`. */
  async exec (code: string): Promise<void> {
    await this.host.request({ type: 'exec', room: this.name, code })
  }

  leave (): Promise<void> {
    return this.host.leave(this as Room<never>)
  }

  /** A join frame is on its way: hold events until its reply, so order holds. */
  beginJoin (): JsonObject {
    this.joined = false
    this.buffer ??= []
    const frame: JsonObject = { type: 'join', room: this.name }
    if (this.offset !== undefined) frame.since = this.offset
    if (this.offset !== undefined && this.epoch !== '') frame.epoch = this.epoch
    return frame
  }

  /** The connection dropped: the membership is gone until the next join. */
  suspend (): void {
    this.joined = false
  }

  applyJoined (j: Joined<T>): void {
    this.state = j.state ?? {}
    this.version = j.version
    this.members.clear()
    for (const m of j.members) this.members.add(m)
    let resumeFrom = this.offset
    this.lastJoinComplete = resumeFrom === undefined || j.recovered
    if (typeof j.epoch === 'string' && j.epoch !== '') this.epoch = j.epoch
    if (resumeFrom !== undefined && j.reason === 'epoch_changed') {
      // our offsets counted in another history: start this one from its beginning
      this.emit('reset', { room: this.name, previousOffset: resumeFrom, offset: 0 })
      this.offset = resumeFrom = 0
    }
    if (resumeFrom === undefined) {
      this.offset = j.offset
    } else if (j.offset < resumeFrom) {
      // without this, every new message would look like a duplicate and be dropped
      this.offset = j.offset
      this.lastJoinComplete = false
      this.emit('reset', { room: this.name, previousOffset: resumeFrom, offset: j.offset })
    } else {
      const missed = [...j.missed].filter(m => m.offset > resumeFrom).sort((a, b) => a.offset - b.offset)
      for (const m of missed) this.deliver(m)
      if (j.offset > (this.offset ?? 0)) {
        this.emit('gap', { room: this.name, from: (this.offset ?? 0) + 1, to: j.offset })
        this.offset = j.offset
      }
      if (j.recovered) this.emit('recovered', { room: this.name, missed: missed.length })
    }
    this.joined = true
    const held = this.buffer ?? []
    this.buffer = null
    for (const event of held) this.process(event)
    if (!this.everJoined) {
      this.everJoined = true
      this.settleReady.resolve()
    }
  }

  /** The server refused the (re)join: the room is closed. */
  fail (err: Error): void {
    this.closed = true
    this.joined = false
    this.buffer = null
    if (!this.everJoined) this.settleReady.reject(err)
    else this.emit('left', { room: this.name, error: err })
  }

  markLeft (): void {
    this.closed = true
    this.joined = false
    this.buffer = null
    this.emit('left', { room: this.name })
  }

  receive (event: RoomEvent): void {
    if (this.closed) return
    if (this.buffer) this.buffer.push(event)
    else this.process(event)
  }

  private process (event: RoomEvent): void {
    switch (event.type) {
      case 'room_message':
        this.deliver(event as RoomMessage<T>)
        break
      case 'state':
        if (event.version <= this.version) return
        this.state = applyMergePatch(this.state, event.patch) as JsonObject
        this.version = event.version
        this.emit('state', { ...event, state: this.state })
        break
      case 'presence':
        if (event.event === 'join') this.members.add(event.clientId)
        else this.members.delete(event.clientId)
        this.emit('presence', { ...event, members: [...this.members] })
        break
      case 'exec_result':
        this.emit('exec_result', event)
        break
    }
  }

  /** Exactly once, in order: older or repeated offsets are dropped, holes are reported. */
  private deliver (m: RoomMessage<T>): void {
    if (this.offset !== undefined) {
      if (m.offset <= this.offset) return
      if (m.offset > this.offset + 1) this.emit('gap', { room: this.name, from: this.offset + 1, to: m.offset - 1 })
    }
    this.offset = m.offset
    if (typeof m.epoch === 'string' && m.epoch !== '') this.epoch = m.epoch
    this.emit('message', m)
  }
}
