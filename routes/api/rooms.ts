import type { FastifyInstance, FastifyReply } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId } from '../../plugins/direct-messages.js'
import { WsError } from '../../plugins/dispatcher.js'
import { Offset, RoomName, StatePatch, Version } from '../../plugins/rooms.js'
import { ErrorBody } from './errors.js'
import { canUseRoom } from '../../plugins/auth.js'

const Params = Type.Object({ room: RoomName })

const RoomList = Type.Object({
  rooms: Type.Array(Type.Object({ room: Type.String(), members: Type.Integer({ minimum: 0 }), version: Version })),
  /** Present when there are more rooms: pass it back as `cursor` for the next page. */
  nextCursor: Type.Optional(Type.String())
})
/** A page of the room list: `limit` rooms [100, at most 1000] after `cursor` (the previous page's `nextCursor`). */
export const ROOM_PAGE_DEFAULT = 100
export const ROOM_PAGE_MAX = 1000
const RoomListQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: ROOM_PAGE_MAX, default: ROOM_PAGE_DEFAULT }),
  cursor: Type.Optional(RoomName)
})
const RoomView = Type.Object({
  room: Type.String(),
  state: Type.Record(Type.String(), Type.Unknown()),
  version: Version,
  offset: Offset,
  members: Type.Array(Type.String())
})

const PublishBody = Type.Object({ from: Type.Optional(ClientId), data: Type.Unknown() })
const PublishReply = Type.Object({
  ok: Type.Literal(true),
  offset: Offset,
  messageId: Type.String(),
  delivered: Type.Integer({ minimum: 0 })
})

const PatchBody = Type.Object({ patch: StatePatch, baseVersion: Type.Optional(Version), from: Type.Optional(ClientId) })
const PatchReply = Type.Object({ ok: Type.Literal(true), version: Version })

/** Sender named in room_message/state when an HTTP caller names none. */
export const SERVER_SENDER = 'server'

const STATUS: Partial<Record<WsError['code'], [number, string]>> = {
  invalid_message: [400, 'Bad Request'],
  version_conflict: [409, 'Conflict'],
  state_too_large: [413, 'Payload Too Large'],
  unavailable: [503, 'Service Unavailable']
}

/** Contract errors from the rooms plugin, in Fastify's error shape plus `code` and any details. */
function sendRoomError (reply: FastifyReply, err: unknown) {
  if (!(err instanceof WsError)) throw err
  const [statusCode, error] = STATUS[err.code] ?? [500, 'Internal Server Error']
  return reply.code(statusCode).send({ statusCode, error, message: err.message, code: err.code, ...err.extra })
}

export default async function roomRoutes (app: FastifyInstance) {
  /** The sender an HTTP caller may use: itself with a user token, anyone with a service token or in open mode. */
  function senderOf (principal: { sub: string, role?: string } | null, from: string | undefined): string | null {
    if (!principal || principal.role === 'service') return from ?? SERVER_SENDER
    if (from === undefined || from === principal.sub) return principal.sub
    return null
  }

  // A token's `rooms` claim limits which rooms it may read and write over HTTP too.
  app.addHook('preHandler', async (request, reply) => {
    const room = (request.params as { room?: string } | undefined)?.room
    if (room !== undefined && !canUseRoom(request.principal, room)) {
      return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: `this token may not use room ${room}` })
    }
  })

  app.get<{ Querystring: Static<typeof RoomListQuery> }>('/rooms', {
    schema: { querystring: RoomListQuery, response: { 200: RoomList, 400: ErrorBody, 503: ErrorBody } }
  }, async (request, reply) => {
    try {
      // a token with a `rooms` claim sees only the rooms it may use
      const allowed = request.principal?.rooms ?? null
      const page = await app.rooms.listPage({ after: request.query.cursor, limit: request.query.limit, allowed })
      return page.next === undefined ? { rooms: page.rooms } : { rooms: page.rooms, nextCursor: page.next }
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })

  app.get<{ Params: Static<typeof Params> }>('/rooms/:room', {
    schema: { params: Params, response: { 200: RoomView, 404: ErrorBody, 503: ErrorBody } }
  }, async (request, reply) => {
    try {
      const room = await app.rooms.describe(request.params.room)
      if (room) return room
      return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `room ${request.params.room} has never been used` })
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })

  app.post<{ Params: Static<typeof Params>, Body: Static<typeof PublishBody> }>('/rooms/:room/publish', {
    schema: { params: Params, body: PublishBody, response: { 200: PublishReply, 400: ErrorBody, 403: ErrorBody, 413: ErrorBody, 503: ErrorBody } }
  }, async (request, reply) => {
    const from = senderOf(request.principal, request.body.from)
    if (from === null) return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'a token may only publish as its own sub' })
    // a message no member could receive over WebSocket is refused up front
    const bytes = Buffer.byteLength(JSON.stringify(request.body.data ?? null))
    if (bytes > app.config.WS_MAX_PAYLOAD) {
      return reply.code(413).send({ statusCode: 413, error: 'Payload Too Large', message: `data is ${bytes} bytes, more than WS_MAX_PAYLOAD (${app.config.WS_MAX_PAYLOAD})` })
    }
    try {
      const result = await app.rooms.publish(from, request.params.room, request.body.data)
      return { ok: true as const, ...result }
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })

  app.patch<{ Params: Static<typeof Params>, Body: Static<typeof PatchBody> }>('/rooms/:room/state', {
    schema: { params: Params, body: PatchBody, response: { 200: PatchReply, 400: ErrorBody, 403: ErrorBody, 409: ErrorBody, 413: ErrorBody, 503: ErrorBody } }
  }, async (request, reply) => {
    const from = senderOf(request.principal, request.body.from)
    if (from === null) return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'a token may only update as its own sub' })
    try {
      const { version } = await app.rooms.update(from, request.params.room, request.body.patch, request.body.baseVersion)
      return { ok: true as const, version }
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })
}
