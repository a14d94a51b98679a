import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId } from '../protocol/schemas.js'
import { ROOM_NAME_MAX_LENGTH, ROOM_NAME_PATTERN } from '../protocol/limits.js'
import { accessTo } from '../plugins/engine/access.js'
import { errorBody } from '../plugins/core/errors.js'
import { EventIdError, eventIdMaxLength, parseEventId, type StreamFormat, type StreamRequest } from '../plugins/sse/index.js'

const roomPattern = new RegExp(ROOM_NAME_PATTERN)

/**
 * The receive-only doors for clients that cannot open a WebSocket:
 * `GET /sse` (text/event-stream, for EventSource) and `GET /stream`
 * (NDJSON over a chunked response), with the same query and the same events.
 * Both pass the engine's preamble (origin, token, connection slot) through
 * `streamRoute`; their own checks are the query's and the rooms' access.
 */
export default async function sseRoutes (app: FastifyInstance) {
  const maxRooms = app.config.MAX_ROOMS_PER_CONNECTION
  const idMaxLength = eventIdMaxLength(maxRooms)
  const roomsMaxLength = maxRooms * (ROOM_NAME_MAX_LENGTH + 1)
  const Query = Type.Object({
    rooms: Type.Optional(Type.String({ maxLength: roomsMaxLength, description: `a comma list of at most ${maxRooms} room names` })),
    clientId: Type.Optional(ClientId),
    token: Type.Optional(Type.String({ maxLength: 4096 })),
    lastEventId: Type.Optional(Type.String({ maxLength: idMaxLength, description: 'the id of the last event received (as the Last-Event-ID header)' }))
  })
  type StreamQuery = Static<typeof Query>
  const asked = new WeakMap<FastifyRequest, StreamRequest>()

  /** The rooms and the resume position, validated; the rooms' access decided by the one access function. */
  const check = async (request: FastifyRequest, reply: FastifyReply) => {
    const query = request.query as StreamQuery
    const rooms = query.rooms === undefined || query.rooms === '' ? [] : query.rooms.split(',')
    if (rooms.length > maxRooms) return reply.code(400).send(errorBody(400, 'invalid_message', `rooms: at most ${maxRooms} rooms (MAX_ROOMS_PER_CONNECTION), got ${rooms.length}`, { limit: maxRooms }))
    const seen = new Set<string>()
    for (const room of rooms) {
      if (room.length < 1 || room.length > ROOM_NAME_MAX_LENGTH || !roomPattern.test(room)) {
        return reply.code(400).send(errorBody(400, 'invalid_message', `rooms: ${JSON.stringify(room.slice(0, 64))} is not a room name (1-${ROOM_NAME_MAX_LENGTH} of A-Z a-z 0-9 _ . : -, comma-separated)`))
      }
      if (seen.has(room)) return reply.code(400).send(errorBody(400, 'invalid_message', `rooms: ${room} is listed twice`))
      seen.add(room)
      if (accessTo(request.principal, room) === null) {
        request.log.warn({ event: 'stream.access_denied', room, clientKey: request.clientKey }, 'the token does not give access to this room')
        return reply.code(403).send(errorBody(403, 'forbidden', `rooms: the token's rooms claim does not include ${room}`))
      }
    }
    const header = request.headers['last-event-id']
    if (Array.isArray(header)) return reply.code(400).send(errorBody(400, 'invalid_message', 'Last-Event-ID: must be sent once'))
    // the header is what EventSource sends on its own reconnects; the query is for clients that cannot set it
    const [field, id] = header !== undefined ? ['Last-Event-ID', header] : ['lastEventId', query.lastEventId ?? '']
    let from
    try {
      from = parseEventId(id, idMaxLength, field)
    } catch (err) {
      if (!(err instanceof EventIdError)) throw err
      return reply.code(400).send(errorBody(400, 'invalid_message', err.message, { limit: idMaxLength }))
    }
    // positions of rooms no longer listed are forgotten
    for (const room of from.keys()) if (!seen.has(room)) from.delete(room)
    asked.set(request, { rooms, from })
  }

  const declare = (url: string, format: StreamFormat, description: string) => {
    app.streamRoute<{ Querystring: StreamQuery }>({
      url,
      protocol: app.httpStreams.protocol(format),
      // described with /ws in docs/protocol.md and the AsyncAPI document, not as an HTTP API route
      schema: { querystring: Query, description, hide: true },
      check,
      encoder: request => app.httpStreams.encoder(format, asked.get(request) ?? { rooms: [], from: new Map() }),
      accepted: (session, request) => app.httpStreams.accepted(session, asked.get(request) ?? { rooms: [], from: new Map() })
    })
  }
  declare('/sse', 'sse', 'Server-Sent Events: the /ws frames of the client\'s direct messages and of the listed rooms, each event named by its frame type, with an id that resumes the stream (Last-Event-ID)')
  declare('/stream', 'stream', 'HTTP streaming: the same events as /sse, one {"id","event","data"} JSON object a line (NDJSON), resumed with ?lastEventId=')
}
