import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId, RoomName } from '../../protocol/schemas.js'
import { ERROR_STATUS, WsError } from '../../protocol/errors.js'
import { isAdmin, ADMIN_ROLE } from '../../plugins/engine/auth.js'
import { REASON_MAX_LENGTH } from '../../plugins/admin/index.js'
import { commonErrors, errorResponse } from './errors.js'
import { errorBody } from '../../plugins/core/errors.js'

export const CONNECTION_PAGE_DEFAULT = 50
export const CONNECTION_PAGE_MAX = 500

const Uuid = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9-]+$' })
const ServerId = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9-]+$', description: 'an instance\'s server id (its `welcome.serverId`)' })

const ConnectionsQuery = Type.Object({
  clientId: Type.Optional({ ...ClientId, description: 'only the connections of this client id' }),
  room: Type.Optional({ ...RoomName, description: 'only connections that joined this room' }),
  serverId: Type.Optional(ServerId),
  search: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'a piece of the client id, connection id, client key or address' })),
  limit: Type.Integer({ minimum: 1, maximum: CONNECTION_PAGE_MAX, default: CONNECTION_PAGE_DEFAULT }),
  cursor: Type.Optional({ ...Uuid, description: 'the previous page\'s `nextCursor`' })
})

const Open = { additionalProperties: true }
const ConnectionView = Type.Object({
  connectionId: Type.String(),
  clientId: Type.String(),
  clientKey: Type.String(),
  serverId: Type.String(),
  remoteAddress: Type.String(),
  protocol: Type.String(),
  openedAt: Type.String(),
  rooms: Type.Array(Type.String()),
  bufferedBytes: Type.Integer({ minimum: 0 })
}, Open)
const ConnectionPage = Type.Object({
  connections: Type.Array(ConnectionView),
  total: Type.Integer({ minimum: 0, description: 'matching connections on every instance that answered' }),
  nextCursor: Type.Optional(Type.String({ description: 'present when more follow: pass it back as `cursor`' })),
  unreachable: Type.Optional(Type.Array(Type.String(), { description: 'instances that did not answer in time' }))
}, { description: 'A page of the live connections of every instance, in connection id order' })
const InstanceList = Type.Object({
  instances: Type.Array(Type.Object({ serverId: Type.String() }, Open)),
  unreachable: Type.Array(Type.String())
}, { description: 'Every live instance: version, uptime, connections, rooms, messages per second, event-loop lag, memory, Redis status' })

const Reason = Type.String({ minLength: 1, maxLength: REASON_MAX_LENGTH, pattern: '^[ -~]+$', description: `why, shown to the client: 1-${REASON_MAX_LENGTH} printable ASCII characters` })
const DisconnectBody = Type.Object({ reason: Type.Optional(Reason) }, { examples: [{ reason: 'spamming the lobby' }] })
const Disconnected = Type.Object({ ok: Type.Literal(true), disconnected: Type.Integer({ minimum: 1 }) }, { description: 'Closed with 4001 after a `disconnected` frame, on whichever instances held them' })
const Cleared = Type.Object({ ok: Type.Literal(true), room: Type.String(), offset: Type.Integer({ minimum: 0 }) }, { description: 'The history is gone; members got `history_cleared`' })

const DEFAULT_REASON = 'disconnected by an administrator'

const notAdmin = errorResponse('`forbidden`: the token is not an admin token, or a read-only admin token asked for an action')
const notFound = errorResponse('`not_found`: no such connection or client on any instance')
const redisDown = errorResponse('`unavailable`: Redis is down, so the other instances cannot be asked; retry')

/** 401 without an admin principal, 403 for a token without an admin role, or a read-only one on an action. */
async function requireAdmin (request: FastifyRequest, reply: FastifyReply) {
  if (request.method === 'OPTIONS') return
  const principal = request.principal
  if (!principal) {
    return reply.code(401).header('www-authenticate', 'Bearer')
      .send(errorBody(401, 'unauthorized', 'an admin token is required (ADMIN_TOKEN, ADMIN_READONLY_TOKEN or a JWT with role admin)'))
  }
  if (!isAdmin(principal)) {
    return reply.code(403).send(errorBody(403, 'forbidden', 'this token is not an admin token'))
  }
  if (request.routeOptions.config.adminWrite === true && principal.role !== ADMIN_ROLE) {
    return reply.code(403).send(errorBody(403, 'forbidden', 'a read-only admin token may not change anything'))
  }
}

function sendError (reply: FastifyReply, err: unknown) {
  if (err instanceof WsError) {
    const [statusCode] = ERROR_STATUS[err.code]
    return reply.code(statusCode).send(errorBody(statusCode, err.code, err.message))
  }
  const e = err as { statusCode?: number, code?: string, message: string }
  if (e.statusCode === 503) return reply.code(503).send(errorBody(503, 'unavailable', e.message))
  throw err
}

/**
 * The operator's API under /api/admin (and /api/v1/admin). Registered only
 * when admin access is configured; otherwise these paths answer 404. Access is
 * decided here, for every route of this context, after the token was verified.
 */
export default async function adminRoutes (app: FastifyInstance) {
  if (!app.admin.enabled) return
  const operator = app.admin.operator
  app.addHook('preParsing', requireAdmin)
  // the body of an action is optional: none is `{}` (the default reason)
  app.addHook('preValidation', async request => {
    if (request.body === undefined || request.body === null) request.body = {}
  })
  // one line per admin request: who, what, on what; never the token
  app.addHook('onResponse', async (request, reply) => {
    const principal = request.principal
    request.log.info({
      event: 'admin.action',
      who: principal?.sub ?? null,
      role: principal?.role ?? null,
      action: request.routeOptions.config.adminAction ?? `${request.method} ${request.routeOptions.url ?? ''}`,
      target: request.params ?? {},
      statusCode: reply.statusCode
    }, 'admin request')
  })

  app.get('/admin/me', {
    config: { adminAction: 'session' },
    schema: {
      tags: ['admin'],
      summary: 'Who this admin token is',
      description: 'The admin principal of the token and whether it is read-only (the page at /admin hides every action for it).',
      response: { 200: Type.Object({ who: Type.String(), role: Type.String(), readOnly: Type.Boolean() }), ...commonErrors }
    }
  }, async request => {
    const principal = request.principal as { sub: string, role: string }
    return { who: principal.sub, role: principal.role, readOnly: principal.role !== ADMIN_ROLE }
  })

  app.get('/admin/instances', {
    config: { adminAction: 'instances.list' },
    schema: {
      tags: ['admin'],
      summary: 'List every live instance',
      description: 'Every instance alive in the cluster (one without Redis): server id, version, uptime, connections, rooms, messages per second, event-loop lag, memory, Redis status.',
      response: { 200: InstanceList, 503: redisDown, ...commonErrors }
    }
  }, async (_request, reply) => {
    try {
      return await operator.instances()
    } catch (err) {
      return sendError(reply, err)
    }
  })

  app.get<{ Querystring: Static<typeof ConnectionsQuery> }>('/admin/connections', {
    config: { adminAction: 'connections.list' },
    schema: {
      tags: ['admin'],
      summary: 'List live connections of every instance',
      description: `A page of the WebSocket connections of every instance, in connection id order, filtered by \`clientId\`, \`room\`, \`serverId\` and \`search\`. \`limit\` [${CONNECTION_PAGE_DEFAULT}, at most ${CONNECTION_PAGE_MAX}] after \`cursor\`; \`nextCursor\` is present when more follow.`,
      querystring: ConnectionsQuery,
      response: { 200: ConnectionPage, 400: errorResponse('`invalid_message`: a filter or `limit` breaks its schema'), 503: redisDown, ...commonErrors }
    }
  }, async (request, reply) => {
    try {
      return await operator.page(request.query)
    } catch (err) {
      return sendError(reply, err)
    }
  })

  const disconnect = async (reply: FastifyReply, who: string, target: { connectionId: string } | { clientId: string }, body: Static<typeof DisconnectBody> | undefined) => {
    try {
      const { disconnected } = await operator.disconnect(target, body?.reason ?? DEFAULT_REASON, who)
      if (disconnected === 0) {
        const what = 'connectionId' in target ? `connection ${target.connectionId}` : `client ${target.clientId}`
        return reply.code(404).send(errorBody(404, 'not_found', `${what} is not connected to any instance`))
      }
      return { ok: true as const, disconnected }
    } catch (err) {
      return sendError(reply, err)
    }
  }

  app.delete<{ Params: { connectionId: string }, Body: Static<typeof DisconnectBody> }>('/admin/connections/:connectionId', {
    config: { adminWrite: true, adminAction: 'connection.disconnect' },
    schema: {
      tags: ['admin'],
      summary: 'Disconnect one connection',
      description: 'The connection, on whichever instance holds it, gets `{"type":"disconnected","reason"}` and is closed with 4001. Optional body `{"reason"}`.',
      params: Type.Object({ connectionId: Uuid }),
      body: DisconnectBody,
      response: { 200: Disconnected, 403: notAdmin, 404: notFound, 503: redisDown, ...commonErrors }
    }
  }, async (request, reply) => disconnect(reply, request.principal?.sub ?? 'admin', { connectionId: request.params.connectionId }, request.body))

  app.post<{ Params: { clientId: string }, Body: Static<typeof DisconnectBody> }>('/admin/clients/:clientId/disconnect', {
    config: { adminWrite: true, adminAction: 'client.disconnect' },
    schema: {
      tags: ['admin'],
      summary: 'Disconnect every connection of a client',
      description: 'Every connection of the client id, on every instance, gets `{"type":"disconnected","reason"}` and is closed with 4001. Optional body `{"reason"}`.',
      params: Type.Object({ clientId: ClientId }),
      body: DisconnectBody,
      response: { 200: Disconnected, 403: notAdmin, 404: notFound, 503: redisDown, ...commonErrors }
    }
  }, async (request, reply) => disconnect(reply, request.principal?.sub ?? 'admin', { clientId: request.params.clientId }, request.body))

  app.delete<{ Params: { room: string } }>('/admin/rooms/:room/history', {
    config: { adminWrite: true, adminAction: 'room.history.clear' },
    schema: {
      tags: ['admin'],
      summary: 'Clear a room\'s history',
      description: 'Removes the room\'s kept messages (its state and offsets stay); members on every instance get `{"type":"history_cleared"}`.',
      params: Type.Object({ room: RoomName }),
      response: { 200: Cleared, 403: notAdmin, 503: redisDown, ...commonErrors }
    }
  }, async (request, reply) => {
    try {
      const { offset } = await app.rooms.clearHistory(request.params.room, request.principal?.sub ?? 'admin')
      return { ok: true as const, room: request.params.room, offset }
    } catch (err) {
      return sendError(reply, err)
    }
  })
}
