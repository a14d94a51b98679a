import fp from 'fastify-plugin'
import { randomUUID } from 'node:crypto'
import type { WebSocket } from 'ws'

const TEXT_FRAME = { binary: false }

/** One accepted WebSocket, as every other plugin sees it. */
export class Connection {
  readonly id = randomUUID()
  readonly openedAt = Date.now()
  lastSeen = Date.now()
  /** Rooms this connection has joined (owned by the rooms plugin). */
  readonly rooms = new Set<string>()
  /** While queued messages are being replayed, live ones wait here so order holds. */
  private held: Array<string | Buffer> | null = null

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
    this.socket.send(frame, TEXT_FRAME)
    return true
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
  private readonly byId = new Map<string, Connection>()
  private readonly byClient = new Map<string, Set<Connection>>()
  private readonly openListeners: Listener[] = []
  private readonly closeListeners: Listener[] = []

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

export default fp(async function connections (app) {
  app.decorate('connections', new ConnectionRegistry())
}, { name: 'connections', fastify: '5.x' })
