import fp from 'fastify-plugin'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { Server as TlsServer, type TLSSocket } from 'node:tls'
import proxyAddr from '@fastify/proxy-addr'
import { parseTrustProxy } from '../core/config.js'

export interface PendingConnectionsOptions {
  /** Connections that have not finished their first request's headers, in all [512]; past it the oldest is closed. */
  maxTotal?: number
  /** Such connections per client address [64]; more are closed at once. */
  maxPerClient?: number
  /** Time a new connection has to finish its first request's headers [3000]. */
  timeoutMs?: number
  /** Peers whose connections are not counted per address: trusted proxies carry many clients [none]. */
  trustedPeer?: (address: string) => boolean
}

export type PendingOutcome = 'refused' | 'evicted' | 'timed_out'

interface Pending {
  key: string | null
  timer: NodeJS.Timeout
}

/**
 * The TCP connections that have not yet sent a complete request head: the
 * slow-header (slowloris) sockets that would otherwise hold file descriptors
 * until Node's headersTimeout, refusing every new client once the process is
 * out of them. A connection leaves the set at its first 'request' or
 * 'upgrade', when it closes, or when it is closed for one of three reasons:
 * its address already has `maxPerClient` pending (refused at once), the set is
 * full (the oldest is closed to admit it: a real client finishes its headers
 * in milliseconds, so the oldest is the slowest), or `timeoutMs` passed.
 */
export class PendingConnections {
  readonly maxTotal: number
  readonly maxPerClient: number
  readonly timeoutMs: number
  /** Insertion order is age order: the first entry is the oldest. */
  private readonly pending = new Map<Socket, Pending>()
  private readonly perClient = new Map<string, number>()
  private readonly trustedPeer: (address: string) => boolean
  readonly closed: Record<PendingOutcome, number> = { refused: 0, evicted: 0, timed_out: 0 }
  /** Told each time a connection is closed here (for the log line). */
  onClosed: (outcome: PendingOutcome, address: string) => void = () => {}

  constructor (opts: PendingConnectionsOptions = {}) {
    this.maxTotal = opts.maxTotal ?? 512
    this.maxPerClient = opts.maxPerClient ?? 64
    this.timeoutMs = opts.timeoutMs ?? 3000
    this.trustedPeer = opts.trustedPeer ?? (() => false)
  }

  get size (): number {
    return this.pending.size
  }

  /** Pending connections from one address. */
  countOf (address: string): number {
    return this.perClient.get(address) ?? 0
  }

  /** A new TCP connection; closed at once when its address is over its share. */
  admit (socket: Socket): void {
    const address = socket.remoteAddress ?? ''
    const key = this.trustedPeer(address) ? null : address
    if (key !== null && this.countOf(key) >= this.maxPerClient) {
      this.close(socket, 'refused', address)
      return
    }
    if (this.pending.size >= this.maxTotal) {
      const [oldest] = this.pending.keys()
      this.close(oldest, 'evicted', oldest.remoteAddress ?? '')
    }
    const timer = setTimeout(() => this.close(socket, 'timed_out', address), this.timeoutMs)
    timer.unref()
    this.pending.set(socket, { key, timer })
    if (key !== null) this.perClient.set(key, this.countOf(key) + 1)
    socket.once('close', () => this.settle(socket))
  }

  /** The connection finished a request head (or went away): no longer pending. */
  settle (socket: Socket): void {
    const entry = this.pending.get(socket)
    if (entry === undefined) return
    this.pending.delete(socket)
    clearTimeout(entry.timer)
    if (entry.key === null) return
    const left = this.countOf(entry.key) - 1
    if (left <= 0) this.perClient.delete(entry.key)
    else this.perClient.set(entry.key, left)
  }

  /** Closes every pending connection (the server is closing). */
  clear (): void {
    for (const socket of [...this.pending.keys()]) {
      this.settle(socket)
      socket.destroy()
    }
  }

  private close (socket: Socket, outcome: PendingOutcome, address: string): void {
    this.settle(socket)
    this.closed[outcome]++
    socket.destroy()
    this.onClosed(outcome, address)
  }
}

/** TRUST_PROXY as a test of the TCP peer: is it a proxy whose connections carry many clients? */
export function trustedPeerOf (trustProxy: string): (address: string) => boolean {
  const parsed = parseTrustProxy(trustProxy)
  if (typeof parsed === 'boolean') return () => parsed
  if (typeof parsed === 'number') return () => parsed > 0
  const trust = proxyAddr.compile(parsed)
  return address => trust(address, 0)
}

declare module 'fastify' {
  interface FastifyInstance {
    pendingConnections: PendingConnections
  }
}

/** One `connection.pending_closed` line per this interval at most, with the counts so far. */
const LOG_INTERVAL_MS = 10000

/**
 * Caps the connections of this server that have not finished their first
 * request's headers (see PendingConnections), so slow-header clients cannot
 * use up the file descriptors new WebSockets need.
 */
export default fp<PendingConnectionsOptions>(async function pendingConnections (app, opts) {
  const pending = new PendingConnections(opts)
  app.decorate('pendingConnections', pending)
  app.statusReport.section('pendingConnections', () => ({
    current: pending.size,
    max: pending.maxTotal,
    perClientMax: pending.maxPerClient,
    timeoutMs: pending.timeoutMs,
    closed: { ...pending.closed }
  }))

  let loggedAt = 0
  pending.onClosed = (outcome, address) => {
    const now = Date.now()
    if (now - loggedAt < LOG_INTERVAL_MS) return
    loggedAt = now
    app.log.warn({
      event: 'connection.pending_closed',
      reason: outcome,
      clientKey: address,
      pending: pending.size,
      limit: pending.maxTotal,
      perClientLimit: pending.maxPerClient,
      timeoutMs: pending.timeoutMs,
      ...pending.closed
    }, 'closed a connection that had not finished its request headers')
  }

  // With TLS (TLS_CERT), a connection is admitted once its handshake is done
  // (tls' handshakeTimeout bounds the handshake): its requests' sockets are the
  // TLS socket. An HTTP/2 connection multiplexes requests on one session and is
  // not a slow-header socket of this kind: it is never admitted.
  const tls = app.server instanceof TlsServer
  const admitted = tls ? 'secureConnection' : 'connection'
  const onConnection = (socket: Socket) => {
    if (tls && (socket as TLSSocket).alpnProtocol === 'h2') return
    pending.admit(socket)
  }
  const onRequest = (request: IncomingMessage) => pending.settle(request.socket)
  const onUpgrade = (_request: IncomingMessage, socket: Socket) => pending.settle(socket)
  app.server.on(admitted, onConnection)
  app.server.on('request', onRequest)
  app.server.on('upgrade', onUpgrade)
  app.addHook('onClose', async () => {
    app.server.off(admitted, onConnection)
    app.server.off('request', onRequest)
    app.server.off('upgrade', onUpgrade)
    pending.clear()
  })
}, { name: 'pending-connections', fastify: '5.x', dependencies: ['status'] })
