import fp from 'fastify-plugin'
import { randomUUID } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { RawData, WebSocket } from 'ws'
import type { Principal } from '../core/identity.js'
import { CLIENT_ID_MAX_LENGTH, CLIENT_ID_PATTERN } from '../../protocol/limits.js'
import { MessageBucket } from './message-bucket.js'
import { closeCodeLabel } from '../core/metrics.js'
import { WsError } from '../../protocol/errors.js'

const clientIdPattern = new RegExp(CLIENT_ID_PATTERN)

/** Why the engine closes a session; each protocol says which close code that is in its words. */
export type CloseReason = 'slow_consumer' | 'flood' | 'token_expired' | 'auth_timeout' | 'admin' | 'shutdown' | 'internal'

/** What the engine tells every session at shutdown (each protocol words it its own way). */
export interface ShutdownNotice { reason: string, reconnectAfterMs: number, timestamp: string }

/**
 * A wire protocol spoken over sessions (the native one, Pusher, y-websocket,
 * Hocuspocus, ...): its codec and its semantics. The engine owns everything
 * else: caps, the message rate, the send-buffer cap, dead peers, token expiry,
 * shutdown, the admin listing and the metrics; it asks the protocol only how
 * to say each of those in its words.
 */
export interface SessionProtocol {
  /** Names the protocol in metrics, logs and the admin listing. */
  readonly name: string
  /** Sessions reached by client id (direct messages): made reachable cluster-wide before `open`. */
  readonly addressable?: boolean
  /**
   * The protocol authenticates in its own frames after the upgrade (Hocuspocus's
   * Auth message): a session that has not within the registry's auth timeout
   * is closed with `closeCode('auth_timeout')`.
   */
  readonly authenticatesInBand?: boolean
  /** The close code for an engine decision. */
  closeCode (reason: CloseReason): number
  /** After the open gates: the protocol's hello (native `welcome`, Pusher `connection_established`, ...). */
  open? (session: Session): void
  /** One frame within the message rate. A throw (or a rejection) is caught, logged and answered by `failed`. */
  frame (session: Session, data: RawData, isBinary: boolean): unknown
  /** A frame over the message rate, dropped: the protocol's refusal (sustained flooding closes with `closeCode('flood')`). */
  rateLimited (session: Session, data: RawData, isBinary: boolean): void
  /** A frame whose handling threw: the protocol's answer (the session stays open unless it closes it). */
  failed? (session: Session, err: unknown): void
  /** The words before a close the engine decided for `reason` (other than shutdown and admin, which have their own). */
  closing? (session: Session, reason: CloseReason, code: number, message: string): void
  /** The words before the shutdown close (the engine then closes with `closeCode('shutdown')` and the reason returned, if any). */
  goodbye? (session: Session, notice: ShutdownNotice): string | undefined
  /**
   * The session's token expires at `expiresAt` (seconds) soon (the registry's
   * `expiryNoticeMs` before, or half its remaining life if that is shorter):
   * the protocol asks its client for a fresh one (native: `token_expiring`).
   * A protocol without it has its sessions closed at expiry unwarned.
   */
  expiring? (session: Session, expiresAt: number): void
  /** The words before an operator's disconnect (the engine then closes with `closeCode('admin')`). */
  disconnected? (session: Session, reason: string): void
  /** The session is gone (after every engine listener ran). */
  closed? (session: Session): void
  /** What the admin listing shows as the session's channels (rooms, Pusher channels, documents). */
  channels? (session: Session): Iterable<string>
}

/** The protocol of sessions accepted before any protocol registered as the default: frames are dropped. */
const bare: SessionProtocol = {
  name: 'switchboard',
  addressable: true,
  closeCode: reason => CLOSE_CODES[reason],
  frame () {},
  rateLimited () {}
}

/** RFC 6455 close codes for the engine's decisions, as the native protocol uses them. */
export const CLOSE_CODES: Record<CloseReason, number> = {
  slow_consumer: 1013,
  flood: 1008,
  token_expired: 1008,
  auth_timeout: 1008,
  admin: 4001,
  shutdown: 1001,
  internal: 1011
}

/**
 * The send-buffer cap every connection of a registry shares. A peer that does
 * not read lets `bufferedAmount` grow; past `maxBufferedBytes` it is closed with
 * 1013 (try again later) instead of holding server memory.
 */
export class SendBufferPolicy {
  /** Connections closed as slow consumers since start. */
  closes = 0

  constructor (
    readonly maxBufferedBytes = Infinity,
    /** How long a closed slow consumer gets to read the close frame before it is terminated. */
    readonly terminateAfterMs = 2000,
    readonly onClose?: (conn: Session, bufferedAmount: number) => void
  ) {}
}

const unbounded = new SendBufferPolicy()

/** Frame counters shared by every connection of a registry (read by the message-rate plugin). */
export interface Traffic { framesOut: number, framesIn: number }

/**
 * Where a session's frames are written: the TCP socket under a `ws` WebSocket
 * (its `_socket`, frames written as built), or an HTTP stream's encoder
 * (plugins/engine/http-stream.ts), which turns each frame back into its
 * payload and writes it in the stream's format.
 */
export interface FrameSink { cork (): void, uncork (): void, write (frame: Buffer): boolean, destroyed: boolean, writableEnded: boolean }

/**
 * What the engine uses of a session's connection: a `ws` WebSocket, or an
 * HTTP response held open as a stream (SSE, NDJSON: http-stream.ts) that
 * behaves the same way (readyState 0-3, bytes not yet read by the peer, a
 * close that says a code, a ping the heartbeat sends, a 'close' event).
 */
export interface SessionSocket {
  /** 0 connecting, 1 open, 2 closing, 3 closed (WebSocket's values). */
  readonly readyState: number
  /** Bytes written to it that the peer has not read yet (past the kernel's buffers). */
  readonly bufferedAmount: number
  close (code?: number, reason?: string): void
  terminate (): void
  /** The heartbeat's keepalive (a WebSocket ping; a comment line on an HTTP stream). */
  ping (): void
  on (event: 'close', listener: (code: number, reason: Buffer) => void): this
  on (event: 'pong', listener: () => void): this
  once (event: 'close', listener: (code: number, reason: Buffer) => void): this
}

/**
 * An unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2) in one Buffer:
 * header and payload together, so a frame is one socket write, and a broadcast
 * builds it once for all its members. `ws` would build a header per socket and
 * write header and payload as two chunks (cork, two writes, a writev).
 * Compression is never negotiated here (the websocket plugin turns it off), so
 * RSV1 stays clear.
 */
export function textFrame (payload: string | Buffer): Buffer {
  const length = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.allocUnsafe(header + length)
  frame[0] = 0x81 // FIN, opcode 1 (text)
  if (header === 2) {
    frame[1] = length
  } else if (header === 4) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
    frame.writeUInt32BE(length >>> 0, 6)
  }
  if (typeof payload === 'string') frame.write(payload, header)
  else payload.copy(frame, header)
  return frame
}

/** An unmasked, unfragmented WebSocket binary frame (opcode 2) in one Buffer, as `textFrame`. */
export function binaryFrame (payload: Uint8Array): Buffer {
  const frame = textFrame(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength))
  frame[0] = 0x82 // FIN, opcode 2 (binary)
  return frame
}

/**
 * Frames to one peer within one event-loop turn leave in one write syscall:
 * the first is written at once (a broadcast reaches each member with one
 * frame, and it goes out immediately), and from a second one on the peer's
 * TCP socket is corked until the turn ends (a message and its ack, a burst of
 * publishes under load, a history replay). One setImmediate per turn ends it.
 */
export class SendTurns {
  /** The current event-loop turn, as this registry counts them. */
  turn = 0
  private ending = false
  private readonly corked: Session[] = []

  /** Called for every frame: the first one of a turn schedules its end. */
  sending (): void {
    if (this.ending) return
    this.ending = true
    setImmediate(this.end)
  }

  /** A connection corked for this turn: uncorked when it ends. */
  corkedUntilEnd (conn: Session): void {
    this.corked.push(conn)
  }

  private readonly end = (): void => {
    this.ending = false
    this.turn++
    const connections = this.corked.splice(0)
    for (const conn of connections) conn.uncork()
  }
}

/** A turn's frames for one peer are written early past this many bytes (a big frame goes at once). */
const CORK_MAX_BYTES = 16384

/**
 * One accepted session, of any protocol, as every other plugin sees it: over a
 * WebSocket (this class), or over an HTTP stream (StreamSession in
 * http-stream.ts, which only changes where frames are written: `sink`).
 */
export class Session {
  /** The connection id (the `welcome`'s `connectionId`). */
  readonly id: string
  readonly openedAt = Date.now()
  lastSeen = Date.now()
  /** When a frame was last written to it (a protocol's keepalive sends only to idle sessions). */
  lastSentAt = Date.now()
  /** Rooms this connection has joined (owned by the rooms plugin). */
  readonly rooms = new Set<string>()
  /** The verified token's claims (set by the upgrade route); null in open mode. */
  principal: Principal | null = null
  /** The earliest `exp` (seconds) of the tokens this session authenticated with (or of its refreshed token); it is closed then. */
  expiresAt: number | undefined
  /** When (ms) the protocol is told the token is about to expire; undefined once told. */
  expiryNoticeAt: number | undefined
  /** The message-rate bucket (WS_MESSAGES_PER_SECOND), set by the registry that accepted it. */
  bucket: MessageBucket | null = null
  /** Set by the registry this connection is added to. */
  sendBuffer: SendBufferPolicy = unbounded
  /** While queued messages are being replayed, live ones wait here (as frames) so order holds. */
  private held: Buffer[] | null = null
  /** Replaced by the registry's shared counters when the connection is added. */
  traffic: Traffic = { framesOut: 0, framesIn: 0 }
  /** The turns of the registry that accepted it (cork state is per registry, so per app); its own until then. */
  turns: SendTurns = new SendTurns()
  /** The TCP socket while it is corked for this turn, and the bytes sent to it since. */
  private corkedSocket: FrameSink | null = null
  private corkedBytes = 0
  /** The turn of the last frame sent: a second frame in the same turn corks. */
  private sentInTurn = -1
  /** Set once the engine decided to close it: its last frames go out without the send-buffer cap. */
  private closing = false

  constructor (
    readonly socket: SessionSocket,
    readonly clientId: string,
    readonly clientKey: string,
    readonly remoteAddress: string,
    readonly protocol: SessionProtocol = bare,
    /** Chosen before the session exists (the connect hook names it to the backend); a fresh one otherwise. */
    id?: string
  ) {
    this.id = id ?? randomUUID()
  }

  get open (): boolean {
    return this.socket.readyState === 1
  }

  /** Bytes written to it that the peer has not read yet (past the kernel's buffers). */
  get bufferedAmount (): number {
    return this.socket.bufferedAmount
  }

  /** Sends a binary message (the Yjs protocols), with the same send-buffer cap as text. */
  sendBinary (payload: Uint8Array): boolean {
    if (this.socket.readyState !== 1) return false
    return this.sendFrame(binaryFrame(payload))
  }

  /**
   * Closes with the protocol's code for `reason`; a peer that does not
   * complete the close handshake in time is terminated.
   */
  close (reason: CloseReason, message: string): void {
    if (this.socket.readyState >= 2 || this.closing) return
    // the protocol's last words must not trip the send-buffer cap into a second close
    this.closing = true
    const code = this.protocol.closeCode(reason)
    if (reason !== 'shutdown' && reason !== 'admin') {
      try {
        this.protocol.closing?.(this, reason, code, message)
      } catch {}
    }
    this.closeWith(code, message)
  }

  /** Closes with an explicit code (the protocol's own refusals); terminated if the peer does not answer in time. */
  closeWith (code: number, message: string): void {
    const socket = this.socket
    if (socket.readyState >= 2) return
    this.closing = true
    this.uncork()
    socket.close(code, message.slice(0, 120))
    setTimeout(() => { if (socket.readyState !== 3) socket.terminate() }, this.sendBuffer.terminateAfterMs).unref()
  }

  /** Sends an already-serialized JSON message (a Buffer too goes out as text); returns false when the socket is not open. */
  sendRaw (payload: string | Buffer): boolean {
    if (this.socket.readyState !== 1) return false
    return this.sendFrame(textFrame(payload))
  }

  /**
   * Sends a frame built by `textFrame` (the same Buffer may go to many
   * connections); returns false when the socket is not open.
   */
  sendFrame (frame: Buffer): boolean {
    if (this.socket.readyState !== 1) return false
    if (this.held) {
      this.held.push(frame)
      return true
    }
    const turns = this.turns
    turns.sending()
    if (this.sentInTurn === turns.turn) {
      if (this.corkedSocket === null) this.cork()
    } else {
      this.sentInTurn = turns.turn
    }
    const raw = this.sink()
    if (raw === undefined) return false
    raw.write(frame)
    this.lastSentAt = Date.now()
    this.traffic.framesOut++
    if (this.corkedSocket !== null) {
      // written (and the cap applied) at the end of the turn, or now past CORK_MAX_BYTES
      this.corkedBytes += frame.length
      if (this.corkedBytes >= CORK_MAX_BYTES) this.uncork()
      return true
    }
    // bufferedAmount only grows past the kernel's socket buffers when the peer stops reading
    if (!this.closing && this.socket.bufferedAmount > this.sendBuffer.maxBufferedBytes) this.closeAsSlowConsumer()
    return true
  }

  /** Where frames are written, while it can still take writes: here the TCP socket `ws` writes to. */
  protected sink (): FrameSink | undefined {
    const raw = (this.socket as unknown as { _socket?: FrameSink | null })._socket
    if (raw == null || raw.destroyed || raw.writableEnded) return undefined
    return raw
  }

  private cork (): void {
    const raw = this.sink()
    if (raw === undefined) return
    raw.cork()
    this.corkedSocket = raw
    this.turns.corkedUntilEnd(this)
  }

  /** Writes what this turn sent (one syscall), then applies the send-buffer cap to what the kernel did not take. */
  uncork (): void {
    const raw = this.corkedSocket
    if (raw === null) return
    this.corkedSocket = null
    this.corkedBytes = 0
    raw.uncork()
    if (!this.closing && this.socket.readyState === 1 && this.socket.bufferedAmount > this.sendBuffer.maxBufferedBytes) this.closeAsSlowConsumer()
  }

  private closeAsSlowConsumer (): void {
    const policy = this.sendBuffer
    const buffered = this.socket.bufferedAmount
    policy.closes++
    policy.onClose?.(this, buffered)
    // CLOSING from here on: sendRaw drops further frames, so the buffer stops growing
    this.close('slow_consumer', 'send buffer full: reading too slowly')
  }

  send (message: object): boolean {
    return this.sendRaw(JSON.stringify(message))
  }

  /** Holds live frames until `release()`, so a replay of older messages goes first. */
  hold (): void {
    this.held ??= []
  }

  release (): void {
    const held = this.held
    this.held = null
    if (held) for (const frame of held) this.sendFrame(frame)
  }
}

type Listener = (conn: Session) => void

/** Runs before an addressable session opens (the cluster makes the client reachable); `abandon` undoes it for a socket that closed first. */
export interface WelcomeGate { ready (conn: Session): Promise<void>, abandon (conn: Session): void }

/** The message rate every session of a registry gets (WS_MESSAGES_PER_SECOND). */
export interface MessageRateLimits {
  /** Frames per second, sustained [50]. */
  messagesPerSecond: number
  /** Frames a session may send at once [2 x messagesPerSecond]. */
  burst: number
  /** A session still over its rate after this long is closed with its protocol's flood code [3000]. */
  floodCloseMs: number
}

export interface RegistryEvents {
  /** A frame over the rate was refused ('limited') or the session was closed for flooding ('flood'). */
  rateLimited? (conn: Session, outcome: 'limited' | 'flood'): void
  /** A session closed, with the code its peer or the server gave. */
  closed? (conn: Session, code: number): void
}

/** Longest delay a Node timer takes; later expiries are re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * The client id an upgrade asks for: the token's sub, else the host's choice
 * (a protocol's, the connect hook's), else `?clientId=` when it is a valid
 * client id; undefined when none names one (the session gets an anonymous id).
 */
export function requestedClientId (request: FastifyRequest, chosen?: string): string | undefined {
  const asked = (request.query as { clientId?: unknown } | undefined)?.clientId
  const valid = typeof asked === 'string' && asked.length <= CLIENT_ID_MAX_LENGTH && clientIdPattern.test(asked) ? asked : undefined
  return request.principal?.sub ?? chosen ?? valid
}

/** A generated client id, for a connection nobody named. */
export function anonymousClientId (): string {
  return `anon-${randomUUID()}`
}

/**
 * Every live session of this instance, of every protocol: by id, and by
 * client id for the ones reached by client id. The registry owns what every
 * protocol gets alike: the message rate, the send-buffer cap (each session's
 * `sendBuffer`), token expiry, the shutdown notice, an operator's disconnect,
 * and handler failures that never escape to the process.
 */
export class SessionRegistry {
  /** Frames received and sent by all sessions since start. */
  readonly traffic: Traffic = { framesOut: 0, framesIn: 0 }
  /** This registry's event-loop turns: its connections cork and uncork together, apart from any other app's. */
  readonly turns = new SendTurns()
  private readonly byId = new Map<string, Session>()
  private readonly byClient = new Map<string, Set<Session>>()
  private readonly openListeners: Listener[] = []
  private readonly closeListeners: Listener[] = []
  private readonly welcomeGates: WelcomeGate[] = []
  private readonly expiries = new Map<Session, NodeJS.Timeout>()
  private readonly authDeadlines = new Map<Session, NodeJS.Timeout>()
  private readonly protocols = new Map<string, number>()
  private readonly refreshListeners: Listener[] = []
  readonly rate: MessageRateLimits
  /** How long before its token's `exp` a session's protocol is told (`expiring`) [60000]; half the token's remaining life when that is shorter. */
  expiryNoticeMs = 60000
  private defaultProtocol: SessionProtocol = bare

  constructor (
    readonly sendBuffer: SendBufferPolicy = new SendBufferPolicy(),
    /** Names this instance (the native `welcome` says it). */
    readonly serverId: string = randomUUID(),
    private readonly log?: FastifyBaseLogger,
    rate: Partial<MessageRateLimits> = {},
    private readonly events: RegistryEvents = {},
    /** AUTH_TIMEOUT_MS: how long a session of an in-band authenticating protocol has to authenticate. */
    readonly authTimeoutMs = 10000
  ) {
    const messagesPerSecond = rate.messagesPerSecond ?? 50
    this.rate = { messagesPerSecond, burst: rate.burst ?? messagesPerSecond * 2, floodCloseMs: rate.floodCloseMs ?? 3000 }
  }

  /** The protocol of sessions accepted without one (the native protocol registers itself; one). */
  acceptByDefault (protocol: SessionProtocol): void {
    if (this.defaultProtocol !== bare) throw new Error(`sessions are already accepted as ${this.defaultProtocol.name} by default`)
    this.defaultProtocol = protocol
  }

  /** Holds the open of every addressable session until `gate.ready` resolves for it. */
  addWelcomeGate (gate: WelcomeGate): void {
    this.welcomeGates.push(gate)
  }

  /**
   * Takes an upgraded socket as a session of `protocol`: releases the
   * upgrade's HTTP objects, installs the listeners, keeps frames sent before
   * the open, passes the open gates (addressable sessions), adds the session
   * and lets the protocol say hello. Every upgrade route calls it through the
   * engine's route helper, and so can any Fastify app that registers these
   * plugins (examples/embed).
   */
  accept (socket: WebSocket, request: FastifyRequest, opts: { clientId?: string, protocol?: SessionProtocol, connectionId?: string } = {}): Session {
    // Nothing holds the upgrade's HTTP objects once the connection is open: the ServerResponse
    // stays attached to the TCP socket, and @fastify/websocket's own 'error' listener closes
    // over the request and reply. Left as they are, they keep about 2 KB per connection
    // (response, Fastify request and reply, headers) alive for its whole life. The listener
    // below replaces theirs (its default logs and terminates; so does this one).
    const raw = request.raw.socket as Socket & { _httpMessage?: ServerResponse | null }
    raw._httpMessage?.detachSocket(raw)
    socket.removeAllListeners('error')
    const protocol = opts.protocol ?? this.defaultProtocol
    const conn = new Session(socket, this.clientIdOf(request, opts.clientId), request.clientKey, request.ip, protocol, opts.connectionId)
    const frame = this.adopt(conn, request)
    socket.on('message', frame)
    socket.on('error', err => {
      this.log?.debug({ event: 'connection.error', protocol: protocol.name, connectionId: conn.id, err }, 'connection error')
      // ws has already queued its close frame (1002, 1007, 1009): write it out, then end the socket
      conn.uncork()
      socket.terminate()
    })
    return conn
  }

  /** A session's client id: the token's sub, else the host's choice, else ?clientId= when it is a valid client id, else an anonymous one. */
  clientIdOf (request: FastifyRequest, chosen?: string): string {
    return requestedClientId(request, chosen) ?? anonymousClientId()
  }

  /**
   * Makes a new session on any transport (a WebSocket: `accept`; an HTTP
   * stream: http-stream.ts) one of this registry's: its principal, rate and
   * caps, the open gates (addressable sessions), the add and the protocol's
   * hello, the close listener. Returns where its incoming frames go (frames
   * before the open are kept until it).
   */
  adopt (conn: Session, request: FastifyRequest): (data: RawData, isBinary: boolean) => void {
    const protocol = conn.protocol
    const clientId = conn.clientId
    conn.principal = request.principal
    conn.turns = this.turns
    conn.sendBuffer = this.sendBuffer
    conn.traffic = this.traffic
    conn.bucket = new MessageBucket(this.rate.messagesPerSecond, this.rate.burst, this.rate.floodCloseMs)
    const log = this.log
    const gates = protocol.addressable === true ? this.welcomeGates : []

    // frames sent before the open (a pipelining client) are handled once the session is registered
    let early: Array<[RawData, boolean]> | null = []
    conn.socket.on('close', (code, reason) => {
      // passed the gates but never added: give the registrations back here
      if (early) for (const gate of gates) gate.abandon(conn)
      early = null
      this.remove(conn)
      this.events.closed?.(conn, code)
      log?.info({ event: 'connection.close', protocol: protocol.name, connectionId: conn.id, clientId, clientKey: conn.clientKey, code, reason: reason.toString().slice(0, 120), durationMs: Date.now() - conn.openedAt }, 'connection closed')
    })

    // reachable from every instance before the open: a message sent after it is delivered, never queued
    Promise.all(gates.map(gate => gate.ready(conn))).then(() => {
      if (early === null) return // closed meanwhile
      this.add(conn)
      try {
        protocol.open?.(conn)
      } catch (err) {
        this.failed(conn, err)
      }
      log?.info({ event: 'connection.open', protocol: protocol.name, connectionId: conn.id, clientId, clientKey: conn.clientKey, connections: this.size }, 'connection opened')
      const pending = early
      early = null
      for (const [data, isBinary] of pending) this.frame(conn, data, isBinary)
    }, err => {
      log?.error({ event: 'ws.dispatch_failed', protocol: protocol.name, connectionId: conn.id, err }, 'could not register the connection')
      conn.socket.terminate()
    })
    return (data, isBinary) => {
      if (early) early.push([data, isBinary])
      else this.frame(conn, data, isBinary)
    }
  }

  /**
   * One frame of a session: the message rate first (every protocol alike),
   * then the protocol's handler; whatever it throws is logged and answered
   * here, never left to reach the process.
   */
  private frame (conn: Session, data: RawData, isBinary: boolean): void {
    conn.lastSeen = Date.now()
    // frames still arriving after a close get no reply (and no log line each)
    if (conn.socket.readyState !== 1) return
    this.traffic.framesIn++
    const taken = conn.bucket === null ? 'ok' : conn.bucket.take()
    if (taken !== 'ok') {
      this.events.rateLimited?.(conn, taken)
      if (taken === 'flood') {
        this.log?.warn({ event: 'ws.flood_closed', protocol: conn.protocol.name, connectionId: conn.id, clientKey: conn.clientKey, limit: this.rate.messagesPerSecond }, 'connection closed for sustained flooding')
        conn.close('flood', 'message rate exceeded')
        return
      }
      try {
        conn.protocol.rateLimited(conn, data, isBinary)
      } catch (err) {
        this.failed(conn, err)
      }
      return
    }
    let handled: unknown
    try {
      handled = conn.protocol.frame(conn, data, isBinary)
    } catch (err) {
      this.failed(conn, err)
      return
    }
    if (handled instanceof Promise) handled.catch(err => this.failed(conn, err))
  }

  /** A protocol handler threw: logged once here, answered by the protocol, the session and the process go on. */
  private failed (conn: Session, err: unknown): void {
    this.log?.error({ event: 'session.frame_failed', protocol: conn.protocol.name, connectionId: conn.id, clientKey: conn.clientKey, err }, 'a frame could not be handled')
    try {
      conn.protocol.failed?.(conn, err)
    } catch {}
  }

  /**
   * A session proved a token (at the upgrade, or later in-band as Hocuspocus
   * does per document): it becomes its principal if it had none, and the
   * session closes at the earliest `exp` of its tokens.
   */
  authenticated (conn: Session, principal: Principal | null): void {
    clearTimeout(this.authDeadlines.get(conn))
    this.authDeadlines.delete(conn)
    if (principal === null) return
    conn.principal ??= principal
    if (principal.exp === undefined || (conn.expiresAt !== undefined && conn.expiresAt <= principal.exp)) return
    this.setExpiry(conn, principal.exp)
    if (this.byId.has(conn.id)) this.armExpiry(conn)
  }

  /**
   * A live session proved a fresh token (the native `refresh` frame): the new
   * principal replaces the old one, and so does its expiry (a token without
   * `exp` lifts it), with a new notice before it. The client id cannot
   * change: a token for another `sub` is refused with `forbidden`. The
   * features then re-check what the new claims allow (onRefresh: the rooms
   * plugin leaves the rooms no longer allowed).
   */
  refresh (conn: Session, principal: Principal): void {
    if (principal.sub !== conn.clientId) throw new WsError('forbidden', `refresh: the token's sub must be this connection's client id ${conn.clientId}`)
    conn.principal = principal
    clearTimeout(this.expiries.get(conn))
    this.expiries.delete(conn)
    conn.expiresAt = undefined
    conn.expiryNoticeAt = undefined
    if (principal.exp !== undefined) {
      this.setExpiry(conn, principal.exp)
      if (this.byId.has(conn.id)) this.armExpiry(conn)
    }
    this.log?.info({ event: 'auth.token_refreshed', protocol: conn.protocol.name, connectionId: conn.id, clientId: conn.clientId, exp: principal.exp }, 'token refreshed')
    for (const fn of this.refreshListeners) fn(conn)
  }

  /** Runs after a session's token was replaced by `refresh` (its new principal is set). */
  onRefresh (fn: Listener): void {
    this.refreshListeners.push(fn)
  }

  private setExpiry (conn: Session, exp: number): void {
    conn.expiresAt = exp
    if (conn.protocol.expiring === undefined) return
    const left = exp * 1000 - Date.now()
    conn.expiryNoticeAt = exp * 1000 - Math.min(this.expiryNoticeMs, Math.floor(left / 2))
  }

  private armExpiry (conn: Session): void {
    clearTimeout(this.expiries.get(conn))
    const exp = conn.expiresAt
    if (exp === undefined) return
    const now = Date.now()
    const delay = exp * 1000 - now
    if (delay <= 0) {
      this.expiries.delete(conn)
      this.log?.info({ event: 'auth.token_expired', protocol: conn.protocol.name, connectionId: conn.id, clientId: conn.clientId }, 'token expired: closing the connection')
      conn.close('token_expired', 'token expired')
      return
    }
    const noticeAt = conn.expiryNoticeAt
    if (noticeAt !== undefined && noticeAt <= now) {
      conn.expiryNoticeAt = undefined
      try {
        conn.protocol.expiring?.(conn, exp)
      } catch (err) {
        this.failed(conn, err)
      }
    }
    const next = conn.expiryNoticeAt === undefined ? delay : Math.min(delay, conn.expiryNoticeAt - now)
    const timer = setTimeout(() => this.armExpiry(conn), Math.min(next, MAX_TIMER_MS))
    timer.unref()
    this.expiries.set(conn, timer)
  }

  /** Tells the session why in its protocol's words, then closes it with the protocol's operator code. */
  disconnect (conn: Session, reason: string): void {
    try {
      conn.protocol.disconnected?.(conn, reason)
    } catch {}
    conn.close('admin', reason)
  }

  /** Tells the session the server is going away in its protocol's words, then closes it with the protocol's shutdown code. */
  goodbye (conn: Session, notice: ShutdownNotice): void {
    conn.release()
    let reason: string | undefined
    try {
      reason = conn.protocol.goodbye?.(conn, notice) ?? undefined
    } catch {}
    conn.close('shutdown', reason ?? 'server shutting down')
  }

  get size (): number {
    return this.byId.size
  }

  /** Addressable clients (client ids with a session reached by client id). */
  get clientCount (): number {
    return this.byClient.size
  }

  /** Open sessions by protocol name. */
  countsByProtocol (): ReadonlyMap<string, number> {
    return this.protocols
  }

  all (): IterableIterator<Session> {
    return this.byId.values()
  }

  get (connectionId: string): Session | undefined {
    return this.byId.get(connectionId)
  }

  /** The client's addressable sessions (those direct messages reach). */
  ofClient (clientId: string): ReadonlySet<Session> | undefined {
    return this.byClient.get(clientId)
  }

  add (conn: Session): void {
    conn.sendBuffer = this.sendBuffer
    conn.traffic = this.traffic
    conn.turns = this.turns
    this.byId.set(conn.id, conn)
    const name = conn.protocol.name
    this.protocols.set(name, (this.protocols.get(name) ?? 0) + 1)
    if (conn.protocol.addressable === true) {
      let set = this.byClient.get(conn.clientId)
      if (!set) {
        set = new Set()
        this.byClient.set(conn.clientId, set)
      }
      set.add(conn)
    }
    if (conn.principal?.exp !== undefined && (conn.expiresAt === undefined || conn.principal.exp < conn.expiresAt)) this.setExpiry(conn, conn.principal.exp)
    if (conn.expiresAt !== undefined) this.armExpiry(conn)
    if (conn.protocol.authenticatesInBand === true && !this.authDeadlines.has(conn)) {
      const deadline = setTimeout(() => {
        this.authDeadlines.delete(conn)
        this.log?.info({ event: 'auth.timeout', protocol: conn.protocol.name, connectionId: conn.id, clientKey: conn.clientKey, timeoutMs: this.authTimeoutMs }, 'closing a connection that did not authenticate in time')
        conn.close('auth_timeout', 'authentication timeout')
      }, this.authTimeoutMs)
      deadline.unref()
      this.authDeadlines.set(conn, deadline)
    }
    for (const fn of this.openListeners) fn(conn)
  }

  remove (conn: Session): void {
    if (!this.byId.delete(conn.id)) return
    const name = conn.protocol.name
    const left = (this.protocols.get(name) ?? 1) - 1
    if (left > 0) this.protocols.set(name, left)
    else this.protocols.delete(name)
    const set = this.byClient.get(conn.clientId)
    if (set?.delete(conn) === true && set.size === 0) this.byClient.delete(conn.clientId)
    clearTimeout(this.expiries.get(conn))
    this.expiries.delete(conn)
    clearTimeout(this.authDeadlines.get(conn))
    this.authDeadlines.delete(conn)
    for (const fn of this.closeListeners) fn(conn)
    try {
      conn.protocol.closed?.(conn)
    } catch (err) {
      this.log?.error({ event: 'session.close_failed', protocol: name, connectionId: conn.id, err }, 'a protocol failed to release a closed session')
    }
  }

  /** Stops every expiry timer (the registry's app is closing). */
  clear (): void {
    for (const timer of [...this.expiries.values(), ...this.authDeadlines.values()]) clearTimeout(timer)
    this.expiries.clear()
    this.authDeadlines.clear()
  }

  /** Sends one serialized message to every addressable session of a client (framed once); returns how many it reached. */
  sendToClient (clientId: string, payload: string | Buffer): number {
    const set = this.byClient.get(clientId)
    if (!set) return 0
    const frame = textFrame(payload)
    let reached = 0
    for (const conn of set) if (conn.sendFrame(frame)) reached++
    return reached
  }

  /** Runs for every session once it is registered, before its protocol's hello. */
  onOpen (fn: Listener): void {
    this.openListeners.push(fn)
  }

  /** Runs after a session is gone for good (clean close, error or termination). */
  onClose (fn: Listener): void {
    this.closeListeners.push(fn)
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Every live session of this instance, of every protocol. */
    sessions: SessionRegistry
  }
}

export interface SessionsOptions {
  /** Bytes a connection's send buffer may hold before it is closed with its protocol's slow-consumer code [1048576]. */
  maxBufferedBytes?: number
  /** WS_MESSAGES_PER_SECOND: frames per second each session may send, every protocol alike (burst = 2x) [50]. */
  messagesPerSecond?: number
  /** A session still over its rate after this long is closed with its protocol's flood code [3000]. */
  floodCloseMs?: number
  /** AUTH_TIMEOUT_MS: how long a session of an in-band authenticating protocol (Hocuspocus) has to authenticate [10000]. */
  authTimeoutMs?: number
  /** AUTH_EXPIRY_NOTICE_MS: how long before its token expires a session is told (native `token_expiring`) [60000]. */
  expiryNoticeMs?: number
}

export default fp<SessionsOptions>(async function sessions (app, opts) {
  const metrics = app.metrics
  const policy = new SendBufferPolicy(opts.maxBufferedBytes ?? 1048576, 2000, (conn, bufferedAmount) => {
    metrics.slowConsumerCloses.inc()
    metrics.sessionSlowConsumerCloses.inc({ protocol: conn.protocol.name })
    app.log.warn({ event: 'connection.slow_consumer', protocol: conn.protocol.name, connectionId: conn.id, clientId: conn.clientId, clientKey: conn.clientKey, bufferedAmount, limit: policy.maxBufferedBytes }, 'closing a connection that does not read its messages')
  })
  const registry = new SessionRegistry(policy, app.serverId, app.log, { messagesPerSecond: opts.messagesPerSecond, floodCloseMs: opts.floodCloseMs }, {
    rateLimited: (conn, outcome) => {
      metrics.rateLimited.inc({ transport: 'ws' })
      metrics.sessionRateLimited.inc({ protocol: conn.protocol.name, outcome })
    },
    closed: (conn, code) => {
      metrics.connectionCloses.inc({ code: closeCodeLabel(code) })
      metrics.sessionCloses.inc({ protocol: conn.protocol.name, code: closeCodeLabel(code) })
    }
  }, opts.authTimeoutMs)
  if (opts.expiryNoticeMs !== undefined) registry.expiryNoticeMs = opts.expiryNoticeMs
  app.decorate('sessions', registry)
  // every protocol that ever had a session keeps its series (at 0 when it has none)
  const seen = new Set<string>()
  metrics.collect(() => {
    metrics.connections.set(registry.size)
    const counts = registry.countsByProtocol()
    for (const protocol of counts.keys()) seen.add(protocol)
    for (const protocol of seen) metrics.sessions.set({ protocol }, counts.get(protocol) ?? 0)
  })
  app.statusReport.section('connections', () => ({
    total: registry.size,
    clients: registry.clientCount,
    byProtocol: Object.fromEntries(registry.countsByProtocol()),
    maxBufferedBytes: policy.maxBufferedBytes,
    slowConsumerCloses: policy.closes
  }))
  app.addHook('onClose', async () => registry.clear())
}, { name: 'sessions', fastify: '5.x', dependencies: ['identity', 'metrics', 'status'] })
