import type { FastifyInstance, FastifyReply } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId, Offset, RoomName, StatePatch, Version } from '../../protocol/schemas.js'
import { ERROR_STATUS, WsError } from '../../protocol/errors.js'
import { commonErrors, errorResponse } from './errors.js'
import { IdempotencyHeaders, idempotencyErrors, idempotentResponse } from './idempotency.js'
import type { Principal } from '../../plugins/core/identity.js'
import { ADMIN_ROLE, visibleRooms } from '../../plugins/engine/index.js'
import { errorBody } from '../../plugins/core/errors.js'

const Params = Type.Object({ room: { ...RoomName, description: 'room name: 1-128 characters of A-Z a-z 0-9 _ . : -' } })

const RoomList = Type.Object({
  rooms: Type.Array(Type.Object({ room: Type.String(), members: Type.Integer({ minimum: 0 }), version: Version })),
  /** Present when there are more rooms: pass it back as `cursor` for the next page. */
  nextCursor: Type.Optional(Type.String({ description: 'Present when more rooms follow: pass it back as `cursor`' }))
}, { description: 'A page of the rooms this caller may see (stored, or with members on any instance), sorted by name', examples: [{ rooms: [{ room: 'doc', members: 2, version: 3 }], nextCursor: 'doc' }] })
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
  epoch: Type.String({ description: 'the room\'s epoch: random, chosen when its history started; offsets count within it (empty for a room never written)' }),
  members: Type.Array(Type.String())
}, { description: 'The room: its state and version, its last offset, its epoch and its members (client ids)', examples: [{ room: 'doc', state: { title: 'Draft' }, version: 3, offset: 12, epoch: '9f86d081884c7d65', members: ['alice', 'bob'] }] })

/** A page of history: `limit` messages [50, at most 1000] before offset `before` (the newest when absent). */
export const HISTORY_PAGE_DEFAULT = 50
export const HISTORY_PAGE_MAX = 1000
const HistoryQuery = Type.Object({
  before: Type.Optional({ ...Offset, minimum: 1, description: 'only messages with a lower offset (the previous page\'s `nextBefore`)' }),
  limit: Type.Integer({ minimum: 1, maximum: HISTORY_PAGE_MAX, default: HISTORY_PAGE_DEFAULT })
})
const HistoryPage = Type.Object({
  messages: Type.Array(Type.Object({
    type: Type.Literal('room_message'),
    room: Type.String(),
    offset: Offset,
    messageId: Type.String(),
    from: Type.String(),
    data: Type.Unknown(),
    timestamp: Type.String(),
    epoch: Type.String({ description: 'the room\'s epoch, as in every room_message: offsets count within it' })
  })),
  nextBefore: Type.Optional(Type.Integer({ description: 'present when older kept messages exist: pass it back as `before`' }))
}, { description: 'Kept messages of the room (at most ROOM_HISTORY_SIZE are kept), oldest first', examples: [{ messages: [{ type: 'room_message', room: 'doc', offset: 12, messageId: '3c9a1f52-7a55-4a49-8c61-2f4b0b7e2d90', from: 'alice', data: { text: 'hi' }, timestamp: '2026-12-01T10:00:00.000Z', epoch: '9f86d081884c7d65' }] }] })

const PublishBody = Type.Object({
  from: Type.Optional({ ...ClientId, description: 'sender shown to members [server]; with a user token, its own sub' }),
  data: Type.Unknown({ description: 'any JSON value, at most WS_MAX_PAYLOAD bytes serialized' })
}, { examples: [{ data: { text: 'build 42 passed' } }, { from: 'ci', data: 42 }] })
const PublishReply = Type.Object({
  ok: Type.Literal(true),
  offset: Offset,
  messageId: Type.String(),
  delivered: Type.Integer({ minimum: 0 })
}, { description: 'Committed: `offset` is the message\'s place in the room, `delivered` the connections it reached here', examples: [{ ok: true, offset: 13, messageId: '3c9a1f52-7a55-4a49-8c61-2f4b0b7e2d90', delivered: 2 }] })

const PatchBody = Type.Object({
  patch: { ...StatePatch, description: 'RFC 7396 JSON Merge Patch: an object; null deletes a key' },
  baseVersion: Type.Optional({ ...Version, description: 'apply only if the room is at exactly this version (409 otherwise)' }),
  from: Type.Optional({ ...ClientId, description: 'shown in the state broadcast [server]; with a user token, its own sub' })
}, { examples: [{ patch: { title: 'Final', draft: null } }, { patch: { count: 2 }, baseVersion: 1 }] })
const PatchReply = Type.Object({ ok: Type.Literal(true), version: Version }, { description: 'Committed; `version` is the room\'s new version', examples: [{ ok: true, version: 4 }] })

const badRoom = errorResponse('`invalid_message`: the room name or a body field breaks its schema; the message names it')
const roomForbidden = errorResponse('`forbidden`: the token\'s `rooms` claim does not allow this room, or a user token names another `from`')
const storeDown = errorResponse('`unavailable`: the store could not load or commit; nothing changed, retry')

/** Sender named in room_message/state when an HTTP caller names none. */
export const SERVER_SENDER = 'server'

/** The client a write is made as (whose idempotency keys it shares), or undefined for the server. */
function asClient (from: string): string | undefined {
  return from === SERVER_SENDER ? undefined : from
}

/** Contract errors from the rooms plugin, in Fastify's error shape plus `code` and any details. */
function sendRoomError (reply: FastifyReply, err: unknown) {
  if (!(err instanceof WsError)) throw err
  const [statusCode] = ERROR_STATUS[err.code]
  return reply.code(statusCode).send(errorBody(statusCode, err.code, err.message, err.extra))
}

export default async function roomRoutes (app: FastifyInstance) {
  /** The sender an HTTP caller names, or the default one: a user token's own sub, else `server`; null when the gate refuses it. */
  function senderOf (principal: Principal | null, from: string | undefined): string | null {
    const sender = from ?? (principal && principal.role !== 'service' && principal.role !== ADMIN_ROLE ? principal.sub : SERVER_SENDER)
    return app.auth.maySendAs(principal, sender) ? sender : null
  }

  // The same gate as the WebSocket handlers: the route's `roomAction` says what it asks (read by default).
  app.addHook('preHandler', async (request, reply) => {
    const room = (request.params as { room?: string } | undefined)?.room
    if (room === undefined) return
    try {
      app.auth.authorize(request.principal, room, request.routeOptions.config.roomAction ?? 'read')
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })

  app.get<{ Querystring: Static<typeof RoomListQuery> }>('/rooms', {
    schema: {
      tags: ['rooms'],
      summary: 'List rooms',
      description: 'A page of the rooms this caller may see (a token with a `rooms` claim sees only those rooms): every stored room and every room with members on any instance, with its member count and state version, sorted by name. `limit` rooms (default 100, at most 1000) after `cursor`; `nextCursor` is present when more follow.',
      querystring: RoomListQuery,
      response: { 200: RoomList, 400: errorResponse('`invalid_message`: `limit` outside 1..1000 or a malformed `cursor`'), 503: storeDown, ...commonErrors }
    }
  }, async (request, reply) => {
    try {
      // a token with a `rooms` claim sees only the rooms it may use
      const allowed = visibleRooms(request.principal)
      const page = await app.rooms.listPage({ after: request.query.cursor, limit: request.query.limit, allowed })
      return page.next === undefined ? { rooms: page.rooms } : { rooms: page.rooms, nextCursor: page.next }
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })

  app.get<{ Params: Static<typeof Params> }>('/rooms/:room', {
    schema: {
      tags: ['rooms'],
      summary: 'Describe a room',
      description: 'The room\'s state, version, last offset and members. 404 for a room never used (no message, no state, no member).',
      params: Params,
      response: { 200: RoomView, 400: badRoom, 403: roomForbidden, 404: errorResponse('`not_found`: the room has never been used'), 503: storeDown, ...commonErrors }
    }
  }, async (request, reply) => {
    try {
      const room = await app.rooms.describe(request.params.room)
      if (room) return room
      return reply.code(404).send(errorBody(404, 'not_found', `room ${request.params.room} has never been used`))
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })

  app.get<{ Params: Static<typeof Params>, Querystring: Static<typeof HistoryQuery> }>('/rooms/:room/history', {
    schema: {
      tags: ['rooms'],
      summary: 'Read a room\'s history',
      description: `The room's kept messages, oldest first: the \`limit\` (default ${HISTORY_PAGE_DEFAULT}, at most ${HISTORY_PAGE_MAX}) just before offset \`before\`, the newest when it is absent. For the members the token's \`rooms\` claim allows, and admins. An unused room has no messages.`,
      params: Params,
      querystring: HistoryQuery,
      response: { 200: HistoryPage, 400: badRoom, 403: roomForbidden, 503: storeDown, ...commonErrors }
    }
  }, async (request, reply) => {
    try {
      const page = await app.rooms.history(request.params.room, { before: request.query.before, limit: request.query.limit })
      return page.next === undefined ? { messages: page.messages } : { messages: page.messages, nextBefore: page.next }
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })

  app.post<{ Params: Static<typeof Params>, Body: Static<typeof PublishBody> }>('/rooms/:room/publish', {
    config: { roomAction: 'publish' },
    schema: {
      tags: ['rooms'],
      summary: 'Publish to a room',
      description: 'Server-side publish: every member gets `{"type":"room_message",...}` with the next offset, and the message enters the room\'s history. Answered after the commit. With PROXY_PUBLISH_URL the application backend is asked first: it may refuse (403 `forbidden`, `hook`, `reason`) or rewrite `data`; when it fails, 503 `unavailable` (PROXY_PUBLISH_ON_FAILURE=deny, the default).',
      params: Params,
      headers: IdempotencyHeaders,
      body: PublishBody,
      response: { 200: PublishReply, 400: badRoom, 403: roomForbidden, ...idempotencyErrors, 413: errorResponse('`payload_too_large`: `data` is larger than WS_MAX_PAYLOAD serialized (no member could receive it), or the body exceeds the HTTP body limit'), 503: storeDown, ...commonErrors }
    }
  }, async (request, reply) => {
    const from = senderOf(request.principal, request.body.from)
    if (from === null) return reply.code(403).send(errorBody(403, 'forbidden', 'from: a token may only publish as its own sub'))
    // a message no member could receive over WebSocket is refused up front
    const bytes = Buffer.byteLength(JSON.stringify(request.body.data ?? null))
    if (bytes > app.config.WS_MAX_PAYLOAD) {
      return reply.code(413).send(errorBody(413, 'payload_too_large', `data: must be at most ${app.config.WS_MAX_PAYLOAD} bytes as JSON (WS_MAX_PAYLOAD), got ${bytes}`))
    }
    const { room } = request.params
    const data = request.body.data
    try {
      return await idempotentResponse(app, request, reply, { client: asClient(from), frame: { type: 'publish', room, data }, request: { route: 'publish', room, from, data } },
        async claim => ({ ok: true as const, ...await app.rooms.publish(from, room, data, { claim, by: { connectionId: null, protocol: 'http' } }) }),
        result => ({ ok: true, offset: result.offset, messageId: result.messageId, delivered: typeof result.delivered === 'number' ? result.delivered : 0 }))
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })

  app.patch<{ Params: Static<typeof Params>, Body: Static<typeof PatchBody> }>('/rooms/:room/state', {
    config: { roomAction: 'update' },
    schema: {
      tags: ['rooms'],
      summary: 'Update a room\'s state',
      description: 'Applies a JSON Merge Patch to the room\'s state; members get `{"type":"state",...}` with the patch. Keys `__proto__`, `constructor` and `prototype` are refused at any depth. Answered after the commit.',
      params: Params,
      headers: IdempotencyHeaders,
      body: PatchBody,
      response: {
        200: PatchReply,
        400: badRoom,
        403: roomForbidden,
        ...idempotencyErrors,
        409: errorResponse('`version_conflict`: `baseVersion` is not the current version, given in `currentVersion`; or `idempotency_in_progress`: a request with this Idempotency-Key is still being handled'),
        413: errorResponse('`state_too_large`: the state after the patch would exceed ROOM_STATE_MAX_BYTES (`bytes`, `maxBytes`); or `payload_too_large` for the body limit'),
        503: storeDown,
        ...commonErrors
      }
    }
  }, async (request, reply) => {
    const from = senderOf(request.principal, request.body.from)
    if (from === null) return reply.code(403).send(errorBody(403, 'forbidden', 'from: a token may only update as its own sub'))
    const { room } = request.params
    const { patch, baseVersion } = request.body
    try {
      return await idempotentResponse(app, request, reply, { client: asClient(from), frame: { type: 'update', room, patch, baseVersion }, request: { route: 'state', room, from, patch, baseVersion } },
        async claim => ({ ok: true as const, version: (await app.rooms.update(from, room, patch, baseVersion, claim)).version }),
        result => ({ ok: true, version: result.version }))
    } catch (err) {
      return sendRoomError(reply, err)
    }
  })
}
