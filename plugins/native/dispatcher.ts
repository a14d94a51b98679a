import fp from 'fastify-plugin'
import type { TProperties, Static, TObject } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import { CLOSE_CODES, type Session, type SessionProtocol } from '../engine/sessions.js'
import { parseJson, typeboxMessage } from '../core/errors.js'
import { DEFAULT_JSON_MAX_DEPTH, tooDeepField } from '../engine/json-limits.js'
import { StoreUnavailableError } from '../core/errors.js'

import { WsError, type ErrorCode } from '../../protocol/errors.js'
import { ClientId, RequestId } from '../../protocol/schemas.js'
import { clientFrame, PingFields } from '../../protocol/client-frames.js'
import type { Welcome } from '../../protocol/frames.js'

/** A plugin's part of the `welcome` frame of a session: top-level fields and/or `limits` entries. */
export type WelcomePart = (conn: Session) => Partial<Omit<Welcome, 'limits'>> & { limits?: Welcome['limits'] }

export { WsError, RequestId, type ErrorCode }

/** Handlers return the direct reply (the dispatcher adds the request's `id`), or nothing. */
export type MessageHandler<P extends TProperties> =
  (conn: Session, message: Static<TObject<P>> & { type: string, id?: string | number }) => unknown

/** What observers are told about one frame (the same object every time, so reporting allocates nothing). */
export interface DispatchEvent { readonly type: string, readonly error?: ErrorCode, readonly reply?: string }

interface Route {
  schema: TObject
  check: TypeCheck<TObject>
  handler: MessageHandler<TProperties>
  /** The event for a valid message of this type, and those for its replies by reply type. */
  event: DispatchEvent
  replies: Map<string, DispatchEvent>
}

export interface DispatcherOptions {
  /** JSON_MAX_DEPTH: deepest nesting of a field's value in a frame [64]. */
  maxDepth?: number
  /** Wraps the handling of every message of a registered type (tracing); unset, messages run bare. */
  around?: AroundMessage
}

/** A parsed frame whose `type` names a registered handler (not yet validated). */
export interface RoutedMessage { type: string, id?: unknown, room?: unknown, [field: string]: unknown }

/** How a message ended: `ok`, or the error code its sender got. */
export type MessageOutcome = 'ok' | ErrorCode

/**
 * Runs the handling of one message of a known type (tracing wraps it in a span).
 * It must call `handle` once and resolve after it.
 */
export type AroundMessage = (conn: Session, message: RoutedMessage, handle: () => Promise<MessageOutcome>) => Promise<void>

/**
 * The native protocol's codec: parse → validate → handler → reply (the
 * session registry has applied the message rate before). Every /ws frame
 * passes here exactly once; handlers receive typed, validated messages.
 */
export class Dispatcher {
  private readonly routes = new Map<string, Route>()
  /** Messages per second each connection may send, and the burst (the registry's, announced in `welcome`). */
  readonly rate: number
  readonly burst: number
  private readonly maxDepth: number
  /** Observers for metrics: called with the type (or the error code) of every frame. */
  private readonly observers: Array<(event: DispatchEvent) => void> = []
  private readonly errorEvents = new Map<ErrorCode, DispatchEvent>()
  /** Wraps the handling of every message of a registered type; unset, messages run bare. */
  readonly around?: AroundMessage
  private readonly welcomeParts: WelcomePart[] = []

  constructor (opts: DispatcherOptions & { rate?: { messagesPerSecond: number, burst: number } }, private readonly log: { error: (obj: object, msg: string) => void, warn: (obj: object, msg: string) => void }) {
    this.rate = opts.rate?.messagesPerSecond ?? 50
    this.burst = opts.rate?.burst ?? this.rate * 2
    this.maxDepth = opts.maxDepth ?? DEFAULT_JSON_MAX_DEPTH
    this.around = opts.around
  }

  /** Adds fields to every `welcome` (a feature's limits), read when each welcome is sent. */
  addWelcomePart (part: WelcomePart): void {
    this.welcomeParts.push(part)
  }

  /** The `welcome` frame of a session: who it is, where, and every part the plugins added. */
  welcome (conn: Session, serverId: string): Welcome {
    const frame: Welcome = { type: 'welcome', clientId: conn.clientId, connectionId: conn.id, serverId, timestamp: new Date().toISOString(), heartbeatIntervalMs: 0, limits: {} }
    for (const part of this.welcomeParts) {
      const { limits, ...fields } = part(conn)
      Object.assign(frame, fields)
      if (limits) Object.assign(frame.limits, limits)
    }
    if (conn.expiresAt !== undefined) frame.tokenExpiresAt = new Date(conn.expiresAt * 1000).toISOString()
    return frame
  }

  /** Calls `fn` with the type (or error code) of every frame handled, and of every reply. */
  onFrame (fn: (event: DispatchEvent) => void): void {
    this.observers.push(fn)
  }

  get types (): string[] {
    return [...this.routes.keys()]
  }

  /** The schema each registered type is validated with (envelope included), for documents such as AsyncAPI. */
  get schemas (): Map<string, TObject> {
    return new Map([...this.routes].map(([type, route]) => [type, route.schema]))
  }

  /** Declares a message type: its fields' schema (besides `type` and `id`) and its handler. */
  register<P extends TProperties> (type: string, fields: P, handler: MessageHandler<P>): void {
    if (this.routes.has(type)) throw new Error(`message type ${type} is already registered`)
    const schema = clientFrame(type, fields)
    this.routes.set(type, { schema, check: TypeCompiler.Compile(schema), handler: handler as MessageHandler<TProperties>, event: Object.freeze({ type }), replies: new Map() })
  }

  /** Resolves with the outcome (undefined for a frame dropped unanswered, or when a wrapper ran it). */
  handle (conn: Session, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): Promise<MessageOutcome | undefined> {
    let route: ReturnType<Dispatcher['route']>
    try {
      route = this.route(conn, data, isBinary)
    } catch (err) {
      return Promise.reject(err)
    }
    if (route === undefined || typeof route === 'string') return Promise.resolve(route)
    const [found, msg, id] = route
    if (this.around === undefined) return this.run(conn, found, msg, id)
    return this.around(conn, msg, () => this.run(conn, found, msg, id)).then(() => undefined)
  }

  /**
   * Parses a frame and finds its route; an outcome instead when the frame is
   * answered with an error (or dropped: undefined). Synchronous, so a frame
   * costs one promise (its handler's), not one per layer.
   */
  private route (conn: Session, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): [Route, RoutedMessage, string | number | undefined] | MessageOutcome | undefined {
    if (isBinary) return this.fail(conn, undefined, 'invalid_message', 'binary frames are not supported; send JSON text')

    let message: unknown
    try {
      message = parseJson(data.toString())
    } catch (err) {
      return this.fail(conn, undefined, 'invalid_message', (err as Error).message)
    }
    if (message === null || typeof message !== 'object' || Array.isArray(message)) {
      return this.fail(conn, undefined, 'invalid_message', 'message: must be a JSON object with a "type"')
    }
    const msg = message as Record<string, unknown>
    const id = typeof msg.id === 'string' || typeof msg.id === 'number' ? msg.id : undefined
    // before anything reads a field: the walks of validation and handlers (merge patch, JSON.stringify) recurse
    const tooDeep = tooDeepField(msg, this.maxDepth)
    if (tooDeep !== null) return this.fail(conn, id, 'invalid_message', tooDeep, { limit: this.maxDepth })
    if (typeof msg.type !== 'string') return this.fail(conn, id, 'invalid_message', 'type: must be a string naming the message type')
    const route = this.routes.get(msg.type)
    if (!route) {
      const known = this.types
      return this.fail(conn, id, 'unknown_type', `type: unknown message type ${JSON.stringify(msg.type.slice(0, 64))}; known types: ${known.join(', ')}`, { knownTypes: known })
    }
    return [route, msg as RoutedMessage, id]
  }

  /** Validates a message of a known type and runs its handler; resolves with the outcome. */
  private async run (conn: Session, route: Route, msg: RoutedMessage, id: string | number | undefined): Promise<MessageOutcome> {
    if (!route.check.Check(msg)) {
      return this.fail(conn, id, 'invalid_message', typeboxMessage(route.check.Errors(msg).First()))
    }

    for (const observe of this.observers) observe(route.event)
    try {
      const reply = await route.handler(conn, msg as never)
      if (reply && typeof reply === 'object') {
        conn.send(id === undefined ? reply : { ...reply, id })
        const replyType = (reply as { type?: unknown }).type
        if (typeof replyType === 'string') {
          let event = route.replies.get(replyType)
          if (event === undefined) {
            event = Object.freeze({ type: msg.type, reply: replyType })
            route.replies.set(replyType, event)
          }
          for (const observe of this.observers) observe(event)
        }
      }
      return 'ok'
    } catch (err) {
      if (err instanceof WsError) return this.fail(conn, id, err.code, err.message, err.extra)
      // the store is down or cannot write (a direct message's inbox, say): an outage, told as one
      if (err instanceof StoreUnavailableError) {
        if (!err.reported) this.log.error({ event: 'ws.handler_failed', type: msg.type, err }, 'message handler failed')
        return this.fail(conn, id, 'unavailable', `${err.message}; retry later`)
      }
      this.log.error({ event: 'ws.handler_failed', type: msg.type, err }, 'message handler failed')
      return this.fail(conn, id, 'internal_error', 'the server could not handle this message')
    }
  }

  /** A frame over the message rate (the registry dropped it): `rate_limited`, naming the request. */
  refuseOverRate (conn: Session, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    this.fail(conn, requestIdOf(data, isBinary), 'rate_limited', `more than ${this.rate} messages per second`)
  }

  /** A frame whose handling failed outside a handler: `internal_error`, the connection stays. */
  failed (conn: Session): void {
    this.fail(conn, undefined, 'internal_error', 'the server could not handle this message')
  }

  private fail (conn: Session, id: string | number | undefined, code: ErrorCode, message: string, extra?: Record<string, unknown>): ErrorCode {
    let event = this.errorEvents.get(code)
    if (event === undefined) {
      event = Object.freeze({ type: 'error', error: code })
      this.errorEvents.set(code, event)
    }
    for (const observe of this.observers) observe(event)
    conn.send({ type: 'error', code, message, ...extra, ...(id === undefined ? {} : { id }) })
    return code
  }
}

/** The `id` of a frame refused before routing (rate limited), so its error still names the request. */
function requestIdOf (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): string | number | undefined {
  if (isBinary) return undefined
  try {
    // plain JSON.parse: only `id` is read, and an own `__proto__` key is inert here
    const id = (JSON.parse(data.toString()) as { id?: unknown } | null)?.id
    if (typeof id === 'number' || (typeof id === 'string' && id.length <= 128)) return id
  } catch {}
  return undefined
}

declare module 'fastify' {
  interface FastifyInstance {
    dispatcher: Dispatcher
    /** The native protocol (/ws): its codec is the dispatcher. */
    nativeProtocol: SessionProtocol
  }
}

export default fp<DispatcherOptions>(async function dispatcher (app, opts) {
  // with tracing on, each message runs inside its span
  const d = new Dispatcher({ around: app.tracing.aroundMessage, ...opts, rate: app.sessions.rate }, app.log)
  const m = app.metrics
  d.onFrame(event => {
    if (event.reply !== undefined) return m.messagesOutByType.add(event.reply)
    if (event.error === undefined) return m.messagesInByType.add(event.type)
    m.messagesOutByType.add('error')
    m.errors.inc({ code: event.error })
  })
  app.decorate('dispatcher', d)
  const registry = app.sessions
  const native: SessionProtocol = {
    name: 'switchboard',
    addressable: true,
    closeCode: reason => CLOSE_CODES[reason],
    open: conn => { conn.send(d.welcome(conn, registry.serverId)) },
    frame: (conn, data, isBinary) => d.handle(conn, data as Buffer, isBinary),
    rateLimited: (conn, data, isBinary) => d.refuseOverRate(conn, data as Buffer, isBinary),
    failed: conn => d.failed(conn),
    goodbye: (conn, notice) => {
      conn.send({ type: 'server_shutdown', ...notice })
      return undefined
    },
    disconnected: (conn, reason) => { conn.send({ type: 'disconnected', reason, timestamp: new Date().toISOString() }) },
    expiring: (conn, expiresAt) => { conn.send({ type: 'token_expiring', expiresAt: new Date(expiresAt * 1000).toISOString(), inMs: Math.max(0, expiresAt * 1000 - Date.now()) }) },
    channels: conn => conn.rooms
  }
  app.decorate('nativeProtocol', native)
  registry.acceptByDefault(native)

  d.register('ping', PingFields, () => ({ type: 'pong', timestamp: new Date().toISOString() }))

  // what the engine and the transport bound, as the welcome announces it
  d.addWelcomePart(() => ({
    heartbeatIntervalMs: app.heartbeat.intervalMs,
    limits: { maxPayload: app.websocketLimits.maxPayload, jsonMaxDepth: app.jsonLimits.maxDepth }
  }))
  // the bounds of the frames, read from the schemas they are validated with, once every handler is registered
  let fieldLimits: Record<string, number | string | undefined> | undefined
  const fieldOf = (type: string, name: string) => d.schemas.get(type)?.properties[name]
  d.addWelcomePart(() => {
    fieldLimits ??= {
      messagesPerSecond: d.rate,
      messageBurst: d.burst,
      textMaxLength: fieldOf('send', 'text')?.maxLength,
      roomNameMaxLength: fieldOf('join', 'room')?.maxLength,
      roomNamePattern: fieldOf('join', 'room')?.pattern,
      clientIdMaxLength: ClientId.maxLength,
      clientIdPattern: ClientId.pattern,
      execCodeMaxLength: fieldOf('exec', 'code')?.maxLength,
      requestIdMaxLength: RequestId.anyOf[0].maxLength
    }
    return { limits: fieldLimits }
  })
}, { name: 'dispatcher', fastify: '5.x', dependencies: ['sessions', 'heartbeat', 'json-limits', 'websocket', 'tracing', 'metrics'] })
