import fp from 'fastify-plugin'
import { randomUUID } from 'node:crypto'
import type { WebSocket } from 'ws'
import type { Principal } from './identity.js'

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

const TEXT_FRAME = { binary: false }

/** The TCP socket under a `ws` WebSocket (its `_socket`), when there is one. */
interface Corkable { cork (): void, uncork (): void, destroyed: boolean }

/**
 * Frames to one peer within one event-loop turn leave in one write syscall:
 * the first is written at once (a broadcast reaches each member with one
 * frame, and it goes out immediately), and from a second one on the peer's
 * TCP socket is corked until the turn ends (a message and its ack, a burst of
 * publishes under load, a history replay). One setImmediate per turn ends it.
 */
let turn = 0
let turnEnding = false
const corked: Connection[] = []
/** A turn's frames for one peer are written early past this many bytes (a big frame goes at once). */
const CORK_MAX_BYTES = 16384

function endTurn (): void {
  turnEnding = false
  turn++
  const connections = corked.splice(0)
  for (const conn of connections) conn.uncork()
}

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
  /** While queued messages are being replayed, live ones wait here so order holds. */
  private held: Array<string | Buffer> | null = null
  /** Replaced by the registry's shared counters when the connection is added. */
  traffic: Traffic = { framesOut: 0 }
  /** The TCP socket while it is corked for this turn, and the bytes sent to it since. */
  private corkedSocket: Corkable | null = null
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

  /** Sends an already-serialized JSON frame (a Buffer too goes out as text); returns false when the socket is not open. */
  sendRaw (frame: string | Buffer): boolean {
    if (this.socket.readyState !== 1) return false
    if (this.held) {
      this.held.push(frame)
      return true
    }
    if (!turnEnding) {
      turnEnding = true
      setImmediate(endTurn)
    }
    if (this.sentInTurn === turn) {
      if (this.corkedSocket === null) this.cork()
    } else {
      this.sentInTurn = turn
    }
    this.socket.send(frame, TEXT_FRAME)
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

  private cork (): void {
    const raw = (this.socket as unknown as { _socket?: Corkable })._socket
    if (raw === undefined || raw.destroyed) return
    raw.cork()
    this.corkedSocket = raw
    corked.push(this)
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
    if (held) for (const frame of held) this.sendRaw(frame)
  }
}

type Listener = (conn: Connection) => void

/** All live connections of this instance, by connection and by client id. */
export class ConnectionRegistry {
  /** Names this instance in `welcome` and across a cluster. */
  readonly serverId = randomUUID()
  /** Frames sent to all connections since start. */
  readonly traffic: Traffic = { framesOut: 0 }
  private readonly byId = new Map<string, Connection>()
  private readonly byClient = new Map<string, Set<Connection>>()
  private readonly openListeners: Listener[] = []
  private readonly closeListeners: Listener[] = []

  constructor (readonly sendBuffer: SendBufferPolicy = new SendBufferPolicy()) {}

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

  /** Sends one serialized frame to every local connection of a client; returns how many it reached. */
  sendToClient (clientId: string, frame: string | Buffer): number {
    const set = this.byClient.get(clientId)
    if (!set) return 0
    let reached = 0
    for (const conn of set) if (conn.sendRaw(frame)) reached++
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
  const policy = new SendBufferPolicy(opts.maxBufferedBytes ?? 1048576, 2000, (conn, bufferedAmount) => {
    app.metrics.slowConsumerCloses.inc()
    app.log.warn({ event: 'connection.slow_consumer', connectionId: conn.id, clientId: conn.clientId, clientKey: conn.clientKey, bufferedAmount, limit: policy.maxBufferedBytes }, 'closing a connection that does not read its messages')
  })
  const registry = new ConnectionRegistry(policy)
  app.decorate('connections', registry)
  app.metrics.collect(() => app.metrics.connections.set(registry.size))
}, { name: 'connections', fastify: '5.x', dependencies: ['metrics'] })
