import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingMessage } from 'node:http'
import type { Http2ServerRequest } from 'node:http2'
import { LocalClientSlots, type ClientSlotCounter } from '../cluster/client-slots.js'

export interface LimitsOptions {
  /** WebSocket connections this instance accepts [1000]. */
  maxConnections?: number
  /** Connections per client key [10]; cluster-wide when `counter` is shared. */
  maxPerClient?: number
  /** Where per-client counts live [a local Map]; with REDIS_URL, app.ts passes the Redis one (plugins/cluster/client-slots.ts). */
  counter?: ClientSlotCounter
}

export type SlotResult =
  | { ok: true, release: () => void }
  | { ok: false, scope: 'total' | 'client', limit: number, current: number }

/**
 * Counts connections from the moment an upgrade is accepted for checking, so a
 * burst of concurrent upgrades can never pass a limit between check and open.
 */
export class ConnectionLimits {
  readonly maxConnections: number
  readonly maxPerClient: number
  private held = 0
  readonly counter: ClientSlotCounter

  constructor (opts: LimitsOptions) {
    this.counter = opts.counter ?? new LocalClientSlots()
    this.maxConnections = opts.maxConnections ?? 1000
    this.maxPerClient = opts.maxPerClient ?? 10
  }

  /** Slots held: open connections plus upgrades in flight. */
  get total (): number {
    return this.held
  }

  async acquire (clientKey: string): Promise<SlotResult> {
    if (this.held >= this.maxConnections) {
      return { ok: false, scope: 'total', limit: this.maxConnections, current: this.held }
    }
    this.held++ // reserved before any await, so concurrent upgrades see it
    let client
    try {
      client = await this.counter.acquire(clientKey, this.maxPerClient)
    } catch (err) {
      this.held--
      throw err
    }
    if (!client.ok) {
      this.held--
      return { ok: false, scope: 'client', limit: this.maxPerClient, current: client.current }
    }
    let released = false
    return {
      ok: true,
      release: () => {
        if (released) return
        released = true
        this.held--
        Promise.resolve(this.counter.release(clientKey)).catch(() => {})
      }
    }
  }
}

/** preValidation hook for the upgrade route: takes a slot or answers 503/429. */
// declared out here: inside `declare module 'fastify'` the emitted .d.ts could not name FastifyReply
export type AcquireConnectionSlot = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

declare module 'fastify' {
  interface FastifyInstance {
    limits: ConnectionLimits
    /** preValidation hook for the upgrade route: takes a slot or answers 503/429. */
    acquireConnectionSlot: AcquireConnectionSlot
  }
}

export default fp<LimitsOptions>(async function limits (app, opts) {
  const limits = new ConnectionLimits(opts)
  app.decorate('limits', limits)
  app.statusReport.section('connections', () => ({ max: limits.maxConnections, perClientMax: limits.maxPerClient }))

  app.decorate('acquireConnectionSlot', async function acquireConnectionSlot (request: FastifyRequest, reply: FastifyReply) {
    const clientKey = request.clientKey
    const result = await limits.acquire(clientKey)
    if (!result.ok) {
      const code = result.scope === 'total' ? 503 : 429
      request.log.warn({ event: 'connection.rejected', reason: `limit_${result.scope}`, clientKey, limit: result.limit, current: result.current, total: limits.total }, 'connection limit exceeded')
      return reply.code(code).send({
        statusCode: code,
        error: 'connection_limit_exceeded',
        code: 'connection_limit_exceeded',
        message: result.scope === 'total'
          ? `this server accepts at most ${result.limit} connections`
          : `at most ${result.limit} connections per client`,
        scope: result.scope,
        limit: result.limit,
        current: result.current
      })
    }
    // The TCP socket closing is the one event every outcome shares: a refused or
    // failed handshake, a clean close, an abrupt disconnect or a termination.
    // An HTTP/2 request (a server with TLS) is one stream of a session whose
    // socket others share: its slot is released when its stream closes.
    const raw = request.raw as IncomingMessage | Http2ServerRequest
    if ('stream' in raw) raw.stream.once('close', result.release)
    else raw.socket.once('close', result.release)
  })
}, { name: 'limits', fastify: '5.x', dependencies: ['identity', 'status'] })
