import fp from 'fastify-plugin'
import { randomUUID } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { RawData, WebSocket } from 'ws'
import type { Principal } from '../core/identity.js'
import type { Welcome } from '../../protocol/frames.js'
import { CLIENT_ID_MAX_LENGTH, CLIENT_ID_PATTERN } from '../../protocol/limits.js'

const clientIdPattern = new RegExp(CLIENT_ID_PATTERN)

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
    readonly onClose?: (conn: Connection, bufferedAmount: number) => void
  ) {}
}

const unbounded = new SendBufferPolicy()

/** Frame counters shared by every connection of a registry (read by the message-rate plugin). */
export interface Traffic { framesOut: number }

/** The TCP socket under a `ws` WebSocket (its `_socket`), when there is one. */
interface RawSocket { cork (): void, uncork (): void, write (chunk: Buffer): boolean, destroyed: boolean, writableEnded: boolean }

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
  private readonly corked: Connection[] = []

  /** Called for every frame: the first one of a turn schedules its end. */
  sending (): void {
    if (this.ending) return
    this.ending = true
    setImmediate(this.end)
  }

  /** A connection corked for this turn: uncorked when it ends. */
  corkedUntilEnd (conn: Connection): void {
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

/** One accepted WebSocket, as every other plugin sees it. */
export class Connection {
  readonly id = randomUUID()
  readonly openedAt = Date.now()
  lastSeen = Date.now()
  /** Rooms this connection has joined (owned by the rooms plugin). */
  readonly rooms = new Set<string>()
  /** The verified token's claims (set by the upgrade route); null in open mode. */
  principal: Principal | null = null
  /** Set by the registry this connection is added to. */
  sendBuffer: SendBufferPolicy = unbounded
  /** While queued messages are being replayed, live ones wait here (as frames) so order holds. */
  private held: Buffer[] | null = null
  /** Replaced by the registry's shared counters when the connection is added. */
  traffic: Traffic = { framesOut: 0 }
  /** The turns of the registry that accepted it (cork state is per registry, so per app); its own until then. */
  turns: SendTurns = new SendTurns()
  /** The TCP socket while it is corked for this turn, and the bytes sent to it since. */
  private corkedSocket: RawSocket | null = null
  private corkedBytes = 0
  /** The turn of the last frame sent: a second frame in the same turn corks. */
  private sentInTurn = -1

  constructor (
    readonly socket: WebSocket,
    readonly clientId: string,
    readonly clientKey: string,
    readonly remoteAddress: string
  ) {}

  get open (): boolean {
    return this.socket.readyState === 1
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
    const raw = this.rawSocket()
    if (raw === undefined) return false
    raw.write(frame)
    this.traffic.framesOut++
    if (this.corkedSocket !== null) {
      // written (and the cap applied) at the end of the turn, or now past CORK_MAX_BYTES
      this.corkedBytes += frame.length
      if (this.corkedBytes >= CORK_MAX_BYTES) this.uncork()
      return true
    }
    // bufferedAmount only grows past the kernel's socket buffers when the peer stops reading
    if (this.socket.bufferedAmount > this.sendBuffer.maxBufferedBytes) this.closeAsSlowConsumer()
    return true
  }

  /** The TCP socket `ws` writes to, while it can still take writes. */
  private rawSocket (): RawSocket | undefined {
    const raw = (this.socket as unknown as { _socket?: RawSocket | null })._socket
    if (raw == null || raw.destroyed || raw.writableEnded) return undefined
    return raw
  }

  private cork (): void {
    const raw = this.rawSocket()
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
    if (this.socket.readyState === 1 && this.socket.bufferedAmount > this.sendBuffer.maxBufferedBytes) this.closeAsSlowConsumer()
  }

  private closeAsSlowConsumer (): void {
    const policy = this.sendBuffer
    const buffered = this.socket.bufferedAmount
    policy.closes++
    policy.onClose?.(this, buffered)
    // CLOSING from here on: sendRaw drops further frames, so the buffer stops growing
    this.socket.close(1013, 'send buffer full: reading too slowly')
    const socket = this.socket
    setTimeout(() => { if (socket.readyState !== 3) socket.terminate() }, policy.terminateAfterMs).unref()
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

type Listener = (conn: Connection) => void

/** Handles every frame of an accepted connection (the dispatcher). */
export type FrameHandler = (conn: Connection, data: RawData, isBinary: boolean) => void
/** A plugin's part of the `welcome` frame: top-level fields and/or `limits` entries. */
export type WelcomePart = () => Partial<Omit<Welcome, 'limits'>> & { limits?: Welcome['limits'] }
/** Runs before the welcome (the cluster makes the client reachable); `abandon` undoes it for a socket that closed first. */
export interface WelcomeGate { ready (conn: Connection): Promise<void>, abandon (conn: Connection): void }

/** All live connections of this instance, by connection and by client id. */
export class ConnectionRegistry {
  /** Frames sent to all connections since start. */
  readonly traffic: Traffic = { framesOut: 0 }
  /** This registry's event-loop turns: its connections cork and uncork together, apart from any other app's. */
  readonly turns = new SendTurns()
  private readonly byId = new Map<string, Connection>()
  private readonly byClient = new Map<string, Set<Connection>>()
  private readonly openListeners: Listener[] = []
  private readonly closeListeners: Listener[] = []
  private frameHandler: FrameHandler | null = null
  private readonly welcomeParts: WelcomePart[] = []
  private readonly welcomeGates: WelcomeGate[] = []

  constructor (
    readonly sendBuffer: SendBufferPolicy = new SendBufferPolicy(),
    /** Names this instance in `welcome`. */
    readonly serverId: string = randomUUID(),
    private readonly log?: FastifyBaseLogger
  ) {}

  /** Where the frames of accepted connections go (the dispatcher registers itself; one handler). */
  handleFramesWith (handler: FrameHandler): void {
    if (this.frameHandler) throw new Error('the connections already have a frame handler')
    this.frameHandler = handler
  }

  /** Adds fields to every `welcome` (heartbeat interval, limits), read when each welcome is sent. */
  addWelcomePart (part: WelcomePart): void {
    this.welcomeParts.push(part)
  }

  /** Holds every welcome until `gate.ready` resolves for the connection. */
  addWelcomeGate (gate: WelcomeGate): void {
    this.welcomeGates.push(gate)
  }

  /**
   * Takes an upgraded socket: releases the upgrade's HTTP objects, installs the
   * listeners, holds frames sent before the welcome, passes the welcome gates,
   * sends the welcome and adds the connection. The /ws route calls it, and so
   * can any Fastify app that registers these plugins (examples/embed).
   */
  accept (socket: WebSocket, request: FastifyRequest, opts: { clientId?: string } = {}): Connection {
    // Nothing holds the upgrade's HTTP objects once the connection is open: the ServerResponse
    // stays attached to the TCP socket, and @fastify/websocket's own 'error' listener closes
    // over the request and reply. Left as they are, they keep about 2 KB per connection
    // (response, Fastify request and reply, headers) alive for its whole life. The listener
    // below replaces theirs (its default logs and terminates; so does this one).
    const raw = request.raw.socket as Socket & { _httpMessage?: ServerResponse | null }
    raw._httpMessage?.detachSocket(raw)
    socket.removeAllListeners('error')
    // the token's sub, else the host's choice, else ?clientId= when it is a valid client id, else an anonymous one
    const asked = (request.query as { clientId?: unknown } | undefined)?.clientId
    const valid = typeof asked === 'string' && asked.length <= CLIENT_ID_MAX_LENGTH && clientIdPattern.test(asked) ? asked : undefined
    const clientId = request.principal?.sub ?? opts.clientId ?? valid ?? `anon-${randomUUID()}`
    const conn = new Connection(socket, clientId, request.clientKey, request.ip)
    conn.principal = request.principal
    conn.turns = this.turns
    const log = this.log

    // frames sent before the welcome (a pipelining client) are handled once the connection is registered
    let early: Array<[RawData, boolean]> | null = []
    const dispatch = (data: RawData, isBinary: boolean) => this.frameHandler?.(conn, data, isBinary)
    socket.on('message', (data, isBinary) => {
      if (early) early.push([data, isBinary])
      else dispatch(data, isBinary)
    })
    socket.on('close', (code, reason) => {
      // passed the gates but never added: give the registrations back here
      if (early) for (const gate of this.welcomeGates) gate.abandon(conn)
      early = null
      this.remove(conn)
      log?.info({ event: 'connection.close', connectionId: conn.id, clientId, clientKey: conn.clientKey, code, reason: reason.toString().slice(0, 120), durationMs: Date.now() - conn.openedAt }, 'connection closed')
    })
    socket.on('error', err => {
      log?.debug({ event: 'connection.error', connectionId: conn.id, err }, 'connection error')
      // ws has already queued its close frame (1002, 1007, 1009): write it out, then end the socket
      conn.uncork()
      socket.terminate()
    })

    // reachable from every instance before the welcome: a message sent after it is delivered, never queued
    Promise.all(this.welcomeGates.map(gate => gate.ready(conn))).then(() => {
      if (early === null) return // closed meanwhile
      conn.send(this.welcome(conn))
      this.add(conn)
      log?.info({ event: 'connection.open', connectionId: conn.id, clientId, clientKey: conn.clientKey, connections: this.size }, 'connection opened')
      const pending = early
      early = null
      for (const [data, isBinary] of pending) dispatch(data, isBinary)
    }, err => {
      log?.error({ event: 'ws.dispatch_failed', connectionId: conn.id, err }, 'could not register the connection')
      socket.terminate()
    })
    return conn
  }

  /** The `welcome` frame for a connection: who it is, where, and every part the plugins added. */
  welcome (conn: Connection): Welcome {
    const frame: Welcome = { type: 'welcome', clientId: conn.clientId, connectionId: conn.id, serverId: this.serverId, timestamp: new Date().toISOString(), heartbeatIntervalMs: 0, limits: {} }
    for (const part of this.welcomeParts) {
      const { limits, ...fields } = part()
      Object.assign(frame, fields)
      if (limits) Object.assign(frame.limits, limits)
    }
    return frame
  }

  get size (): number {
    return this.byId.size
  }

  get clientCount (): number {
    return this.byClient.size
  }

  all (): IterableIterator<Connection> {
    return this.byId.values()
  }

  get (connectionId: string): Connection | undefined {
    return this.byId.get(connectionId)
  }

  ofClient (clientId: string): ReadonlySet<Connection> | undefined {
    return this.byClient.get(clientId)
  }

  add (conn: Connection): void {
    conn.sendBuffer = this.sendBuffer
    conn.traffic = this.traffic
    conn.turns = this.turns
    this.byId.set(conn.id, conn)
    let set = this.byClient.get(conn.clientId)
    if (!set) {
      set = new Set()
      this.byClient.set(conn.clientId, set)
    }
    set.add(conn)
    for (const fn of this.openListeners) fn(conn)
  }

  remove (conn: Connection): void {
    if (!this.byId.delete(conn.id)) return
    const set = this.byClient.get(conn.clientId)
    if (set) {
      set.delete(conn)
      if (set.size === 0) this.byClient.delete(conn.clientId)
    }
    for (const fn of this.closeListeners) fn(conn)
  }

  /** Sends one serialized message to every local connection of a client (framed once); returns how many it reached. */
  sendToClient (clientId: string, payload: string | Buffer): number {
    const set = this.byClient.get(clientId)
    if (!set) return 0
    const frame = textFrame(payload)
    let reached = 0
    for (const conn of set) if (conn.sendFrame(frame)) reached++
    return reached
  }

  onOpen (fn: Listener): void {
    this.openListeners.push(fn)
  }

  /** Runs after a connection is gone for good (clean close, error or termination). */
  onClose (fn: Listener): void {
    this.closeListeners.push(fn)
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    connections: ConnectionRegistry
  }
}

export interface ConnectionsOptions {
  /** Bytes a connection's send buffer may hold before it is closed with 1013 [1048576]. */
  maxBufferedBytes?: number
}

export default fp<ConnectionsOptions>(async function connections (app, opts) {
  const metrics = app.hasDecorator('metrics') ? app.metrics : undefined
  const policy = new SendBufferPolicy(opts.maxBufferedBytes ?? 1048576, 2000, (conn, bufferedAmount) => {
    metrics?.slowConsumerCloses.inc()
    app.log.warn({ event: 'connection.slow_consumer', connectionId: conn.id, clientId: conn.clientId, clientKey: conn.clientKey, bufferedAmount, limit: policy.maxBufferedBytes }, 'closing a connection that does not read its messages')
  })
  const registry = new ConnectionRegistry(policy, app.serverId, app.log)
  app.decorate('connections', registry)
  metrics?.collect(() => metrics.connections.set(registry.size))
  if (app.hasDecorator('statusReport')) {
    app.statusReport.section('connections', () => ({
      total: registry.size,
      clients: registry.clientCount,
      maxBufferedBytes: policy.maxBufferedBytes,
      slowConsumerCloses: policy.closes
    }))
  }
}, { name: 'connections', fastify: '5.x', dependencies: ['identity'] })
