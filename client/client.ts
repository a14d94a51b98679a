import { backoffCeiling, backoffDelay, defaultBackoff, shutdownDelay, type BackoffOptions } from './backoff.js'
import { Emitter } from './emitter.js'
import { Room, type GapEvent, type RecoveredEvent } from './room.js'
import { StreamSocket, sseAvailable, type TransportName } from './stream-socket.js'
import type { WebSocketLike, WebSocketConstructor } from './socket.js'
import {
  SwitchboardError,
  type DirectMessage, type JsonObject, type Joined, type PublishAck, type RoomMessage,
  type SendAck, type ServerError, type ServerShutdown, type Welcome, type TokenExpiring, type RefreshAck
} from '../protocol/frames.js'

export type { WebSocketLike, WebSocketConstructor }

export interface ReconnectOptions extends Partial<BackoffOptions> {
  /** Give up after this many failed attempts in a row [Infinity]. */
  maxAttempts?: number
}

/** When a client on a fallback transport asks whether its WebSocket works again. */
export interface UpgradeOptions {
  /** Ceiling of the first probe's delay after a `welcome` on a fallback transport [1000]. */
  initialDelayMs?: number
  /** No probe waits longer than this: the ceiling doubles after each one that fails [300000]. */
  maxDelayMs?: number
}

/**
 * This many attempts of a reconnect stay on the transports up to the one
 * that carried the last connection: a server that restarts refuses every
 * transport alike, and falling back then would leave the client on a lesser
 * one. The attempts after them try the whole order again (the network may
 * have changed).
 */
const STICKY_ATTEMPTS = 5
/** The close reason the server's answer to a probe upgrade carries. */
const PROBE_CLOSE_REASON = 'probe'

/**
 * Errors that say nothing answers at the server's address at all (the `ws`
 * package names them; a browser does not): every transport goes to the same
 * address, so the attempt ends there, with no fall back. A proxy that refuses
 * upgrades answers (403, a reset after connecting): that is a fall back.
 */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH'])

function unreachable (ev: unknown): boolean {
  const code = (ev as { error?: { code?: unknown } } | null)?.error?.code
  return typeof code === 'string' && UNREACHABLE.has(code)
}

export interface ClientOptions {
  /** `ws://host:port/ws`, or the server's `http(s)://` address (then `/ws` is used). */
  url: string
  /** The name to receive messages as (open mode). */
  clientId?: string
  /** A JWT for auth mode; sent as `?token=` because browsers cannot set upgrade headers. */
  token?: string
  /**
   * Returns a fresh token (from your backend or identity provider). Called when
   * the server says the token expires soon (`token_expiring`): the client sends
   * `refresh` and the connection lives on, rooms and all. Called too before a
   * (re)connect when there is no token or the one held has expired.
   */
  getToken?: () => string | Promise<string>
  /** A request without a reply after this long rejects with `request_timeout` [10000]. */
  requestTimeoutMs?: number
  /** Requests held while disconnected (or paced); the next one rejects with `queue_full` [1000]. */
  maxQueuedRequests?: number
  /** Backoff for reconnecting, or false to never reconnect. */
  reconnect?: ReconnectOptions | false
  /** The WebSocket implementation [the global one, else the `ws` package]. */
  WebSocket?: WebSocketConstructor
  /** Source of randomness for jitter (tests) [Math.random]. */
  random?: () => number
  /**
   * The transports to try, in order, on each (re)connect: when one cannot open
   * (it fails before `welcome`), the next is tried at once. `sse` needs a global
   * `EventSource` (browsers) and is skipped without one; `stream` reads
   * `GET /stream` with `fetch` [['websocket', 'sse', 'stream']]. A reconnect's
   * first attempts do not fall back past the transport that carried the last
   * connection.
   */
  transports?: TransportName[]
  /**
   * On a fallback transport, probe the WebSocket now and then (an upgrade the
   * server closes at once, with no session) and move back to it when it
   * works; false never probes [{ initialDelayMs: 1000, maxDelayMs: 300000 }].
   */
  upgrade?: UpgradeOptions | false
}

export type { TransportName }

export interface ClientEvents {
  /** Connected (first time or again) and, after a reconnect, every room rejoined. */
  open: Welcome
  /** The connection closed; `willReconnect` says whether the client tries again. */
  close: { code: number, reason: string, willReconnect: boolean }
  /** An operator disconnected this client (a close 4001 follows): it does not reconnect on its own. */
  disconnected: { reason: string }
  /** An operator cleared the history of a joined room: messages up to `offset` are gone. */
  history_cleared: { room: string, offset: number, by: string, timestamp: string }
  reconnecting: { attempt: number, delayMs: number }
  /** A direct message. */
  message: DirectMessage
  server_shutdown: ServerShutdown
  /** A server error not tied to a request (e.g. `rate_limited`), or a failed rejoin. */
  error: SwitchboardError
  recovered: RecoveredEvent
  gap: GapEvent
  reset: { room: string, previousOffset: number, offset: number }
  /** The server says the token expires soon; with `getToken` the client refreshes it by itself. */
  token_expiring: TokenExpiring
  /** A `refresh` was accepted: the connection now expires at `expiresAt` (null: never). */
  token_refreshed: { expiresAt: string | null }
  /** The client got a `welcome` over another transport than before (the first one too: `previous` null). */
  transport: { transport: TransportName, previous: TransportName | null }
}

type Kind = 'ping' | 'send' | 'join' | 'leave' | 'publish' | 'update' | 'exec' | 'refresh' | 'rpc'

/** The writes: each gets an `idempotencyKey`, and one in flight at a drop is resent with it. */
const WRITES: ReadonlySet<string> = new Set(['send', 'publish', 'update', 'exec'])

/** A fresh idempotency key: a random UUID (crypto.getRandomValues where randomUUID is missing, as on plain http pages). */
function newKey (): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string, getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto
  if (typeof c?.randomUUID === 'function') return c.randomUUID()
  const bytes = new Uint8Array(16)
  if (typeof c?.getRandomValues === 'function') c.getRandomValues(bytes)
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256)
  return [...bytes].map(b => b.toString(16).padStart(2, '0')).join('')
}

interface Pending {
  id: string
  kind: Kind
  frame: JsonObject
  resolve: (reply: JsonObject) => void
  reject: (err: Error) => void
  timer?: ReturnType<typeof setTimeout>
  sentAt: number
  /** A write: when it was first sent (wall clock), to tell whether its idempotency key is still remembered. */
  firstSentAt?: number
  /** Internal requests (rejoins) are dropped rather than queued when the socket is gone. */
  internal?: boolean
  onSent?: (p: Pending) => void
}

const OPEN = 1
/** The close code of an operator's disconnect (after a `disconnected` frame): never reconnected on its own. */
export const ADMIN_CLOSE_CODE = 4001

function now (): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now()
}

/** Whether a JWT's `exp` has passed (a token that cannot be read counts as valid: the server decides). */
function expired (token: string): boolean {
  try {
    const part = token.split('.')[1] ?? ''
    const json = typeof atob === 'function' ? atob(part.replace(/-/g, '+').replace(/_/g, '/')) : ''
    const exp = (JSON.parse(json) as { exp?: unknown }).exp
    return typeof exp === 'number' && exp * 1000 <= Date.now()
  } catch {
    return false
  }
}

function wsUrl (base: string, clientId?: string, token?: string): string {
  const url = new URL(base)
  if (url.protocol === 'http:') url.protocol = 'ws:'
  if (url.protocol === 'https:') url.protocol = 'wss:'
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/ws'
  if (clientId) url.searchParams.set('clientId', clientId)
  if (token) url.searchParams.set('token', token)
  return url.toString()
}

async function defaultWebSocket (): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: unknown }).WebSocket
  if (typeof global === 'function') return global as WebSocketConstructor
  const mod = await import('ws')
  return (mod.WebSocket ?? mod.default) as unknown as WebSocketConstructor
}

/**
 * A Switchboard connection that keeps itself alive: requests settle by `id`,
 * it reconnects with jittered backoff, rejoins its rooms from the last offset
 * it delivered, and holds requests made while it is away.
 */
export class SwitchboardClient extends Emitter<ClientEvents> {
  readonly options: Required<Omit<ClientOptions, 'clientId' | 'token' | 'WebSocket' | 'reconnect' | 'getToken' | 'transports' | 'upgrade'>> & Pick<ClientOptions, 'clientId' | 'token' | 'WebSocket' | 'getToken'>
  private readonly backoff: BackoffOptions
  private readonly maxAttempts: number
  private readonly reconnectEnabled: boolean
  private socket: WebSocketLike | null = null
  private welcome: Welcome | null = null
  private readonly rooms = new Map<string, Room<never>>()
  private readonly inflight = new Map<string, Pending>()
  private outbox: Pending[] = []
  /** Writes sent on a connection that dropped before their reply: resent with their key after the rejoin. */
  private uncertain: Pending[] = []
  private nextId = 1
  private attempt = 0
  private ready = false
  private userClosed = false
  private shutdownNotice: ServerShutdown | null = null
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  /** Set by a `disconnected` frame: the client stays disconnected. */
  disconnectedBy: { reason: string } | null = null
  private flushTimer: ReturnType<typeof setTimeout> | undefined
  private connecting: Promise<Welcome> | null = null
  private tokens = 0
  private tokensAt = 0
  private closedWaiters: Array<() => void> = []
  private readonly transports: TransportName[]
  /** The transport of the current (or last) connection; null before the first `welcome`. */
  transport: TransportName | null = null
  /** Probing the WebSocket from a fallback transport: false when turned off. */
  private readonly upgradeBackoff: BackoffOptions | false
  private upgradeTimer: ReturnType<typeof setTimeout> | undefined
  /** Probes in a row that found no WebSocket (or whose switch landed on a fallback again). */
  private upgradeAttempt = 0
  private probeSocket: WebSocketLike | null = null
  /** A probe succeeded: new requests wait, and the connection is replaced once nothing is in flight. */
  private upgrading = false

  constructor (opts: ClientOptions) {
    super()
    this.options = {
      url: opts.url,
      clientId: opts.clientId,
      token: opts.token,
      getToken: opts.getToken,
      requestTimeoutMs: opts.requestTimeoutMs ?? 10000,
      maxQueuedRequests: opts.maxQueuedRequests ?? 1000,
      WebSocket: opts.WebSocket,
      random: opts.random ?? Math.random
    }
    this.reconnectEnabled = opts.reconnect !== false
    const r = opts.reconnect === false ? {} : opts.reconnect ?? {}
    this.backoff = {
      initialDelayMs: r.initialDelayMs ?? defaultBackoff.initialDelayMs,
      maxDelayMs: r.maxDelayMs ?? defaultBackoff.maxDelayMs,
      factor: r.factor ?? defaultBackoff.factor
    }
    this.maxAttempts = r.maxAttempts ?? Infinity
    this.transports = opts.transports ?? ['websocket', 'sse', 'stream']
    if (this.transports.length === 0) throw new SwitchboardError('invalid_message', 'transports: name at least one of websocket, sse, stream')
    this.upgradeBackoff = opts.upgrade === false
      ? false
      : { initialDelayMs: opts.upgrade?.initialDelayMs ?? 1000, maxDelayMs: opts.upgrade?.maxDelayMs ?? 300000, factor: 2 }
  }

  /** The server-assigned identity of the current connection, once connected. */
  get clientId (): string | undefined {
    return this.welcome?.clientId ?? this.options.clientId
  }

  get connected (): boolean {
    return this.socket?.readyState === OPEN && this.welcome !== null
  }

  /** Requests waiting to be sent. */
  get queued (): number {
    return this.outbox.length
  }

  get joinedRooms (): ReadonlyMap<string, Room<never>> {
    return this.rooms
  }

  /** Opens the connection and resolves with `welcome`. A failed first attempt rejects (`connect_failed`). */
  connect (): Promise<Welcome> {
    if (this.connected && this.welcome) return Promise.resolve(this.welcome)
    if (this.connecting) return this.connecting
    this.userClosed = false
    this.connecting = this.open(true).finally(() => { this.connecting = null })
    return this.connecting
  }

  /** Sends a direct message; resolves with the server's ack. */
  send (to: string, text: string): Promise<SendAck> {
    return this.request<SendAck>({ type: 'send', to, text })
  }

  /**
   * Replaces the connection's token without reconnecting (`refresh`): with
   * `token`, or else one from `getToken`. Rooms the new token no longer allows
   * are left (their `left` event carries a `forbidden` error).
   */
  async refresh (token?: string): Promise<RefreshAck> {
    const fresh = token ?? await this.options.getToken?.()
    if (fresh === undefined) throw new SwitchboardError('invalid_message', 'refresh needs a token, or the getToken option')
    const ack = await this.enqueue('refresh', { type: 'refresh', token: fresh }) as unknown as RefreshAck
    this.options.token = fresh
    this.emit('token_refreshed', { expiresAt: ack.expiresAt })
    return ack
  }

  /**
   * Calls the application's backend (`rpc`, PROXY_RPC_URL on the server):
   * resolves with its answer's `data`; a refusal rejects with `forbidden`
   * (`details.reason` is the backend's code), a failed backend with
   * `unavailable`. A call in flight when the connection drops rejects with
   * `disconnected` and is not sent again (the backend may have run it).
   */
  async rpc<T = unknown> (method: string, data?: unknown): Promise<T> {
    const reply = await this.enqueue('rpc', data === undefined ? { type: 'rpc', method } : { type: 'rpc', method, data })
    return reply.data as T
  }

  /** Resolves with the round-trip time in milliseconds. */
  async ping (): Promise<number> {
    let sentAt = 0
    await this.enqueue('ping', { type: 'ping' }, p => { sentAt = p.sentAt })
    return now() - sentAt
  }

  /**
   * Joins a room (idempotent per name). With `since`, messages after that offset
   * still in the server's history are delivered first.
   */
  async join<T = unknown> (name: string, opts: { since?: number } = {}): Promise<Room<T>> {
    let room = this.rooms.get(name) as Room<T> | undefined
    if (!room) {
      room = new Room<T>(this, name, opts.since)
      this.rooms.set(name, room as Room<never>)
      room.on('recovered', e => this.emit('recovered', e))
      room.on('gap', e => this.emit('gap', e))
      room.on('reset', e => this.emit('reset', e))
      // otherwise the next welcome joins it
      if (this.connected) this.sendJoin(room as Room<never>)
    }
    await room.ready
    return room
  }

  /** Sends any request frame and resolves with its reply; errors reject with their `code`. */
  request<R> (frame: JsonObject): Promise<R> {
    return this.enqueue(frame.type as Kind, frame) as unknown as Promise<R>
  }

  /** @internal used by Room */
  publish (room: Room<never>, data: unknown): Promise<PublishAck> {
    if (room.closed) return Promise.reject(new SwitchboardError('not_in_room', `room ${room.name} was left`))
    return this.enqueue('publish', { type: 'publish', room: room.name, data }) as unknown as Promise<PublishAck>
  }

  /** @internal used by Room */
  async leave (room: Room<never>): Promise<void> {
    if (this.rooms.get(room.name) !== room) return
    this.rooms.delete(room.name)
    const wasJoined = room.joined
    room.markLeft()
    // a membership that does not exist on the server (disconnected, or still joining) ends with the socket
    if (!wasJoined || !this.connected) return
    await this.enqueue('leave', { type: 'leave', room: room.name }).catch(err => {
      if ((err as SwitchboardError).code !== 'not_in_room' && (err as SwitchboardError).code !== 'disconnected') throw err
    })
  }

  /** Closes for good: no reconnect; whatever is pending rejects with `client_closed`. */
  close (): Promise<void> {
    this.userClosed = true
    clearTimeout(this.reconnectTimer)
    clearTimeout(this.flushTimer)
    this.stopUpgrade()
    this.failAll(new SwitchboardError('client_closed', 'the client was closed'))
    for (const room of this.rooms.values()) room.fail(new SwitchboardError('client_closed', 'the client was closed'))
    this.rooms.clear()
    const socket = this.socket
    if (!socket || socket.readyState === 3) return Promise.resolve()
    return new Promise(resolve => {
      this.closedWaiters.push(resolve)
      socket.close(1000, 'client closed')
    })
  }

  private async open (initial: boolean): Promise<Welcome> {
    const Ctor = this.options.WebSocket ?? await defaultWebSocket()
    const getToken = this.options.getToken
    if (getToken !== undefined && (this.options.token === undefined || expired(this.options.token))) {
      try {
        this.options.token = await getToken()
      } catch (err) {
        if (initial) throw new SwitchboardError('connect_failed', `getToken failed: ${(err as Error).message}`)
        // a reconnect tries again with backoff, like a refused connection
        this.onDisconnect(4000, 'getToken failed', false)
        throw err
      }
    }
    const order = this.order()
    // a reconnect's first attempts end at the transport that carried the last connection (STICKY_ATTEMPTS)
    const proven = this.transport === null ? -1 : order.indexOf(this.transport)
    const end = !initial && proven >= 0 && this.attempt <= STICKY_ATTEMPTS ? proven : order.length - 1
    for (let i = 0; ; i++) {
      if (this.userClosed) throw new SwitchboardError('client_closed', 'the client was closed')
      const last = i === end
      try {
        return await this.tryTransport(order[i], Ctor, initial, last)
      } catch (err) {
        // this transport could not open: the next one is tried at once, unless the server's address did not answer
        if (last || (err as SwitchboardError).code !== 'connect_failed' || (err as SwitchboardError & { unreachable?: true }).unreachable === true) throw err
      }
    }
  }

  /** The transports this client can use here, in the order it tries them. */
  private order (): TransportName[] {
    const order = this.transports.filter(t => t !== 'sse' || sseAvailable())
    if (order.length === 0) order.push('stream')
    return order
  }

  private createSocket (transport: TransportName, Ctor: WebSocketConstructor): WebSocketLike {
    if (transport === 'websocket') return new Ctor(wsUrl(this.options.url, this.options.clientId, this.options.token))
    return new StreamSocket({ transport, url: this.options.url, clientId: this.options.clientId, token: this.options.token })
  }

  private tryTransport (transport: TransportName, Ctor: WebSocketConstructor, initial: boolean, last: boolean): Promise<Welcome> {
    const socket = this.createSocket(transport, Ctor)
    this.socket = socket
    return new Promise<Welcome>((resolve, reject) => {
      let welcomed = false
      socket.onmessage = ev => {
        let msg: JsonObject
        try {
          msg = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data)) as JsonObject
        } catch {
          return
        }
        if (msg.type === 'welcome' && !welcomed) {
          welcomed = true
          const previous = this.transport
          this.transport = transport
          if (transport === 'websocket') this.upgradeAttempt = 0
          if (previous !== transport) this.emit('transport', { transport, previous })
          this.onWelcome(msg as unknown as Welcome)
          resolve(msg as unknown as Welcome)
          return
        }
        this.onFrame(msg)
      }
      let nobodyThere = false
      socket.onerror = ev => { if (!welcomed && unreachable(ev)) nobodyThere = true }
      socket.onclose = ev => {
        if (this.socket === socket) this.socket = null
        if (!welcomed && !last && !nobodyThere) {
          // closed by close() while trying this transport: the next one is not tried, and close() resolves now
          if (this.userClosed) this.notifyClosed()
          reject(new SwitchboardError('connect_failed', `${transport} to ${this.options.url} could not open (close code ${ev.code})`))
          return
        }
        const failed = (message: string) => Object.assign(new SwitchboardError('connect_failed', message), nobodyThere ? { unreachable: true as const } : {})
        if (!welcomed && initial) {
          this.notifyClosed()
          reject(failed(`could not connect to ${this.options.url} (${nobodyThere ? 'nothing answers at its address' : `close code ${ev.code}`})`))
          return
        }
        if (!welcomed) reject(failed(`reconnect attempt failed (${nobodyThere ? 'nothing answers at the server\'s address' : `close code ${ev.code}`})`))
        this.onDisconnect(ev.code, ev.reason, welcomed)
      }
    })
  }

  private onWelcome (welcome: Welcome): void {
    this.welcome = welcome
    this.attempt = 0
    this.shutdownNotice = null
    const rate = welcome.limits?.messagesPerSecond
    this.tokens = typeof rate === 'number' && rate > 0 ? rate : Infinity
    this.tokensAt = now()
    const rooms = [...this.rooms.values()]
    if (rooms.length === 0) return this.becomeReady(welcome)
    let left = rooms.length
    for (const room of rooms) {
      this.sendJoin(room, () => {
        if (--left === 0) this.becomeReady(welcome)
      })
    }
  }

  private becomeReady (welcome: Welcome): void {
    this.resendUncertain()
    this.ready = true
    this.emit('open', welcome)
    this.flush()
    this.scheduleUpgrade()
  }

  /**
   * On a fallback transport where the WebSocket comes first: probe it after a
   * jittered delay that doubles with each probe that fails. A probe is an
   * upgrade to `/ws?probe=1` that the server answers, after all its checks,
   * by closing it at once (1000 `probe`) with no session, so nothing (an
   * inbox, presence) happens twice. When it works, the client moves over:
   * new requests wait, what is in flight is answered, then it reconnects over
   * the WebSocket at once (`close`, `reconnecting`, `transport`, `open`).
   */
  private scheduleUpgrade (): void {
    clearTimeout(this.upgradeTimer)
    const current = this.transport
    if (this.upgradeBackoff === false || this.userClosed || current === null || current === 'websocket') return
    const order = this.order()
    const ws = order.indexOf('websocket')
    if (ws < 0 || ws > order.indexOf(current)) return
    const ceiling = backoffCeiling(this.upgradeAttempt, this.upgradeBackoff)
    const delayMs = Math.floor(ceiling / 2 + this.options.random() * ceiling / 2)
    this.upgradeTimer = setTimeout(() => { this.probeWebSocket().catch(() => {}) }, delayMs)
  }

  private async probeWebSocket (): Promise<void> {
    const socket = this.socket
    if (socket === null || !this.connected || this.userClosed) return
    const Ctor = this.options.WebSocket ?? await defaultWebSocket()
    const url = new URL(wsUrl(this.options.url, this.options.clientId, this.options.token))
    url.searchParams.set('probe', '1')
    const works = await new Promise<boolean>(resolve => {
      const probe = new Ctor(url.toString())
      this.probeSocket = probe
      const timer = setTimeout(() => probe.close(), this.options.requestTimeoutMs)
      probe.onerror = () => {}
      // a server without probes would make this a session: it is closed before it does anything
      probe.onopen = () => {}
      probe.onmessage = () => probe.close()
      probe.onclose = ev => {
        clearTimeout(timer)
        if (this.probeSocket === probe) this.probeSocket = null
        resolve(ev.code === 1000 && ev.reason === PROBE_CLOSE_REASON)
      }
    })
    // the connection was replaced or closed meanwhile: its own welcome decides what happens next
    if (this.socket !== socket || !this.connected || this.userClosed) return
    if (!works) {
      this.upgradeAttempt++
      return this.scheduleUpgrade()
    }
    this.upgrading = true
    this.ready = false
    this.switchWhenIdle()
  }

  /** After a probe worked: the fallback connection closes once nothing is in flight on it. */
  private switchWhenIdle (): void {
    if (!this.upgrading || this.inflight.size > 0) return
    this.socket?.close(1000, 'moving to the websocket')
  }

  private stopUpgrade (): void {
    clearTimeout(this.upgradeTimer)
    this.upgradeTimer = undefined
    this.probeSocket?.close()
    this.probeSocket = null
  }

  /**
   * A write whose reply was lost may or may not have been applied: it is sent
   * again with its idempotency key, ahead of newer requests, and the server
   * answers with the first reply (`duplicate: true`) if it was. Only a write
   * whose key the server may have forgotten (sent more than
   * `idempotencyTtlMs` ago, less the time a resend may take, or a server that
   * announces no idempotency) cannot be settled: `outcome_unknown`.
   */
  private resendUncertain (): void {
    const ttlMs = this.welcome?.limits?.idempotencyTtlMs
    const resend: Pending[] = []
    for (const p of this.uncertain) {
      const age = Date.now() - (p.firstSentAt ?? 0)
      if (typeof ttlMs === 'number' && age + this.options.requestTimeoutMs < ttlMs) {
        resend.push(p)
      } else {
        p.reject(new SwitchboardError('outcome_unknown', `the connection closed before the server answered ${p.kind} ${age} ms ago, and its idempotency key may have expired (idempotencyTtlMs ${ttlMs ?? 'not announced'}); it may or may not have been applied`))
      }
    }
    this.uncertain = []
    this.outbox = [...resend, ...this.outbox]
  }

  private sendJoin (room: Room<never>, done?: () => void): void {
    const frame = room.beginJoin()
    const p = this.makePending('join', frame, reply => {
      if (room.closed) {
        // left while the join was on its way: undo the membership the server just granted
        this.enqueue('leave', { type: 'leave', room: room.name }).catch(() => {})
      } else {
        room.applyJoined(reply as unknown as Joined<never>)
      }
      done?.()
    }, err => {
      if ((err as SwitchboardError).code === 'disconnected' && this.rooms.get(room.name) === room) return // the socket dropped; the next welcome rejoins
      if ((err as SwitchboardError).code === 'request_timeout' && this.socket) {
        // a rejoin that is not answered leaves the room deaf: start over on a fresh connection
        this.socket.close(4000, 'rejoin timed out')
        return
      }
      if (this.rooms.get(room.name) === room) this.rooms.delete(room.name)
      room.fail(err)
      // a refused rejoin has no caller waiting on it: tell the application
      if (done) this.emit('error', err as SwitchboardError)
      done?.()
    })
    p.internal = true
    this.transmit(p)
  }

  private enqueue (kind: Kind, frame: JsonObject, onSent?: (p: Pending) => void): Promise<JsonObject> {
    return new Promise((resolve, reject) => {
      const p = this.makePending(kind, WRITES.has(kind) && frame.idempotencyKey === undefined ? { ...frame, idempotencyKey: newKey() } : frame, resolve, reject)
      p.onSent = onSent
      if (this.userClosed) return reject(new SwitchboardError('client_closed', 'the client was closed'))
      if (this.disconnectedBy && !this.socket) return reject(new SwitchboardError('disconnected', `disconnected by an operator: ${this.disconnectedBy.reason}`))
      if (this.connected && this.ready && this.outbox.length === 0 && this.take()) return this.transmit(p)
      if (this.outbox.length >= this.options.maxQueuedRequests) {
        return reject(new SwitchboardError('queue_full', `${this.outbox.length} requests are already waiting for the connection (maxQueuedRequests); ${kind} was not sent`))
      }
      this.outbox.push(p)
      this.scheduleFlush()
    })
  }

  private makePending (kind: Kind, frame: JsonObject, resolve: (reply: JsonObject) => void, reject: (err: Error) => void): Pending {
    return { id: `c${this.nextId++}`, kind, frame, resolve, reject, sentAt: 0 }
  }

  private transmit (p: Pending): void {
    const socket = this.socket
    if (!socket || socket.readyState !== OPEN) {
      // a rejoin is sent again by the next welcome; anything else waits its turn
      if (!p.internal) this.outbox.unshift(p)
      return
    }
    p.firstSentAt ??= Date.now()
    p.sentAt = now()
    this.inflight.set(p.id, p)
    const timeoutMs = this.options.requestTimeoutMs
    p.timer = setTimeout(() => {
      if (this.inflight.get(p.id) !== p) return
      this.inflight.delete(p.id)
      p.reject(new SwitchboardError('request_timeout', `no reply to ${p.kind} within ${timeoutMs} ms`))
      this.switchWhenIdle()
    }, timeoutMs)
    p.onSent?.(p)
    socket.send(JSON.stringify({ ...p.frame, id: p.id }))
  }

  /** Client-side pacing at the server's advertised rate, so requests are never dropped as `rate_limited`. */
  private take (): boolean {
    if (this.tokens === Infinity) return true
    const rate = this.welcome?.limits?.messagesPerSecond ?? 50
    const t = now()
    this.tokens = Math.min(rate, this.tokens + ((t - this.tokensAt) / 1000) * rate)
    this.tokensAt = t
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  private scheduleFlush (): void {
    if (this.flushTimer !== undefined || !this.connected || !this.ready) return
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined
      this.flush()
    }, 0)
  }

  private flush (): void {
    while (this.outbox.length > 0 && this.connected && this.ready) {
      if (!this.take()) {
        const rate = this.welcome?.limits?.messagesPerSecond ?? 50
        clearTimeout(this.flushTimer)
        this.flushTimer = setTimeout(() => {
          this.flushTimer = undefined
          this.flush()
        }, Math.ceil(1000 / rate))
        return
      }
      this.transmit(this.outbox.shift() as Pending)
    }
  }

  private onFrame (msg: JsonObject): void {
    const id = msg.id
    if (typeof id === 'string' && this.inflight.has(id)) {
      const p = this.inflight.get(id) as Pending
      this.inflight.delete(id)
      clearTimeout(p.timer)
      if (msg.type === 'error') {
        const { type: _t, code, message, id: _i, ...details } = msg as ServerError
        p.reject(new SwitchboardError(String(code), String(message), details))
      } else {
        p.resolve(msg)
      }
      this.switchWhenIdle()
      return
    }
    switch (msg.type) {
      case 'message':
        this.emit('message', msg as unknown as DirectMessage)
        break
      case 'room_message':
      case 'state':
      case 'presence':
      case 'exec_result':
        this.rooms.get(String(msg.room))?.receive(msg as unknown as RoomMessage)
        break
      case 'server_shutdown':
        this.shutdownNotice = msg as unknown as ServerShutdown
        // hold new requests until the server is back instead of sending into a closing socket
        this.ready = false
        this.emit('server_shutdown', this.shutdownNotice)
        break
      case 'token_expiring':
        this.emit('token_expiring', msg as unknown as TokenExpiring)
        if (this.options.getToken !== undefined) this.refresh().catch(err => this.emit('error', err instanceof SwitchboardError ? err : new SwitchboardError('unauthorized', `refresh failed: ${(err as Error).message}`)))
        break
      case 'left': {
        // the server left a room for us: the refreshed token no longer allows it
        const room = this.rooms.get(String(msg.room))
        if (room === undefined) break
        this.rooms.delete(room.name)
        room.fail(new SwitchboardError('forbidden', `the refreshed token no longer allows room ${room.name}`))
        break
      }
      case 'joined':
        // a stream transport reopened its stream (for another room's join or leave): this room resumed on it
        this.rooms.get(String(msg.room))?.applyJoined(msg as unknown as Joined<never>)
        break
      case 'history_cleared':
        this.emit('history_cleared', msg as unknown as ClientEvents['history_cleared'])
        break
      case 'disconnected':
        // an operator's decision: reconnecting on our own would undo it
        this.disconnectedBy = { reason: String(msg.reason) }
        this.ready = false
        this.emit('disconnected', this.disconnectedBy)
        break
      case 'error': {
        const { type: _t, code, message, ...details } = msg as ServerError
        this.emit('error', new SwitchboardError(String(code), String(message), details))
        break
      }
    }
  }

  private onDisconnect (code: number, reason: string, wasOpen: boolean): void {
    this.ready = false
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    this.stopUpgrade()
    // a move to the websocket after a probe: reconnect at once
    const upgrading = this.upgrading
    this.upgrading = false
    // counted until a welcome over the websocket: a move that lands on a fallback again waits longer for the next probe
    if (upgrading) this.upgradeAttempt++
    if (wasOpen) {
      this.welcome = null
      for (const room of this.rooms.values()) room.suspend()
      for (const p of this.inflight.values()) {
        clearTimeout(p.timer)
        if (WRITES.has(p.kind)) this.uncertain.push(p)
        else if (p.kind === 'leave') p.resolve({ type: 'left' })
        else p.reject(new SwitchboardError('disconnected', `the connection closed before the server answered ${p.kind}`))
      }
      this.inflight.clear()
    }
    const byOperator = this.disconnectedBy !== null || code === ADMIN_CLOSE_CODE
    const willReconnect = !this.userClosed && !byOperator && this.reconnectEnabled && this.attempt < this.maxAttempts
    if (wasOpen || !willReconnect) this.emit('close', { code, reason, willReconnect })
    if (this.userClosed) return this.notifyClosed()
    if (!willReconnect) {
      const err = new SwitchboardError('disconnected', byOperator
        ? `disconnected by an operator: ${this.disconnectedBy?.reason ?? reason}`
        : `disconnected (close code ${code}) and not reconnecting`)
      this.failAll(err)
      for (const room of this.rooms.values()) room.fail(err)
      this.rooms.clear()
      return this.notifyClosed()
    }
    // a server that said it shuts down is given its time, even when the client was about to move
    const delayMs = this.shutdownNotice
      ? shutdownDelay(this.shutdownNotice.reconnectAfterMs, this.backoff, this.options.random)
      : upgrading ? 0 : backoffDelay(this.attempt, this.backoff, this.options.random)
    this.shutdownNotice = null
    this.attempt++
    this.emit('reconnecting', { attempt: this.attempt, delayMs })
    this.reconnectTimer = setTimeout(() => {
      this.open(false).catch(() => {})
    }, delayMs)
  }

  private failAll (err: Error): void {
    for (const p of [...this.inflight.values(), ...this.uncertain, ...this.outbox]) {
      clearTimeout(p.timer)
      p.reject(err)
    }
    this.inflight.clear()
    this.uncertain = []
    this.outbox = []
  }

  private notifyClosed (): void {
    for (const fn of this.closedWaiters.splice(0)) fn()
  }
}
