import fp from 'fastify-plugin'
import { CLOSE_CODES, type Session, type SessionProtocol } from '../engine/sessions.js'
import type { StreamEncoder } from '../engine/http-stream.js'
import { WsError } from '../../protocol/errors.js'
import { NdjsonEncoder, RoomCursor, SseEncoder } from './codec.js'
import type { RoomPosition } from './event-id.js'

export { formatEventId, parseEventId, eventIdMaxLength, EventIdError } from './event-id.js'
export type { RoomPosition } from './event-id.js'
export { RoomCursor, SseEncoder, NdjsonEncoder } from './codec.js'
export type { StreamEvent } from './codec.js'

/** What a stream asked for: its rooms, in order, and where it was in each (from its last event id). */
export interface StreamRequest { rooms: readonly string[], from: ReadonlyMap<string, RoomPosition> }

/** The two formats of the same events: SSE (`GET /sse`) and NDJSON (`GET /stream`). */
export type StreamFormat = 'sse' | 'stream'

/**
 * The SSE and HTTP-streaming adapter: receive-only sessions of the engine
 * whose events are the /ws frames, each with an id that resumes the stream.
 */
export interface HttpStreams {
  /** The session protocol of a format (its name in metrics, logs and the admin listing: `sse`, `stream`). */
  protocol (format: StreamFormat): SessionProtocol
  /** The encoder of a new stream, positioned where its last event id said. */
  encoder (format: StreamFormat, request: StreamRequest): StreamEncoder
  /** A stream was accepted: at its open it gets `welcome`, its queued direct messages, then each room's `joined` (or `reset`). */
  accepted (session: Session, request: StreamRequest): void
}

declare module 'fastify' {
  interface FastifyInstance {
    httpStreams: HttpStreams
  }
}

/**
 * The adapter holds only its codec (codec.ts, event-id.ts) and its
 * semantics: the engine accepts, caps, times out, shuts down and lists its
 * sessions (http-stream.ts, upgrade.ts' streamRoute), the rooms registry
 * joins them with the `since`/`epoch` a /ws client would send, the inbox
 * replays their direct messages at the open.
 */
export default fp(async function httpStreams (app) {
  const registry = app.sessions
  const rooms = app.rooms
  const dispatcher = app.dispatcher
  const asked = new WeakMap<Session, StreamRequest>()

  /** Joins one room as a /ws `join` with `since`/`epoch` would: the `joined` frame (with `missed` and `recovered`) is the event. */
  const join = (conn: Session, room: string, from: RoomPosition | undefined): void => {
    const joining = (async () => {
      app.auth.authorize(conn.principal, room, 'join')
      return await rooms.join(conn, room, from?.offset, from === undefined || from.epoch === '' ? undefined : from.epoch)
    })()
    joining.then(joined => {
      // sent in the join's own microtasks: before the frames kept during it (the registry sends those at the next setImmediate)
      if (joined !== undefined) conn.send(joined)
    }, (err: unknown) => {
      const code = err instanceof WsError ? err.code : 'internal_error'
      const message = err instanceof WsError ? err.message : `room ${room} could not be joined`
      if (!(err instanceof WsError)) app.log.error({ event: 'stream.join_failed', protocol: conn.protocol.name, connectionId: conn.id, room, err }, 'a stream could not join a room')
      conn.send({ type: 'error', code, message, room })
    })
  }

  const protocolOf = (name: StreamFormat): SessionProtocol => ({
    name,
    addressable: true,
    closeCode: reason => CLOSE_CODES[reason],
    open: conn => {
      conn.send(dispatcher.welcome(conn, registry.serverId))
      const request = asked.get(conn)
      if (request === undefined) return
      for (const room of request.rooms) join(conn, room, request.from.get(room))
    },
    // receive-only: writes go to the HTTP API
    frame () {},
    rateLimited () {},
    closing: (conn, reason, code, message) => { conn.send({ type: 'close', reason, code, message }) },
    goodbye: (conn, notice) => {
      conn.send({ type: 'server_shutdown', ...notice })
      return undefined
    },
    disconnected: (conn, reason) => { conn.send({ type: 'disconnected', reason, timestamp: new Date().toISOString() }) },
    // no refresh frame on a stream: the client reconnects with a fresh token and its last event id
    expiring: (conn, expiresAt) => { conn.send({ type: 'token_expiring', expiresAt: new Date(expiresAt * 1000).toISOString(), inMs: Math.max(0, expiresAt * 1000 - Date.now()) }) },
    closed: conn => { asked.delete(conn) },
    channels: conn => conn.rooms
  })
  const protocols: Record<StreamFormat, SessionProtocol> = { sse: protocolOf('sse'), stream: protocolOf('stream') }

  app.decorate('httpStreams', {
    protocol: format => protocols[format],
    encoder: (format, request) => {
      const cursor = new RoomCursor(new Map(request.from), new Set(request.from.keys()))
      return format === 'sse' ? new SseEncoder(cursor) : new NdjsonEncoder(cursor)
    },
    accepted: (session, request) => { asked.set(session, request) }
  } satisfies HttpStreams)
}, { name: 'sse', fastify: '5.x', dependencies: ['sessions', 'rooms', 'dispatcher', 'auth', 'direct-messages'] })
