import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId } from '../protocol/schemas.js'
import { closeCodeLabel } from '../plugins/observability/metrics.js'

const Query = Type.Object({
  clientId: Type.Optional(ClientId),
  token: Type.Optional(Type.String({ maxLength: 4096 }))
})

function rejectionReason (status: number, shuttingDown: boolean): string {
  switch (status) {
    case 400: return 'invalid'
    case 401: return 'auth'
    case 403: return 'origin'
    case 429: return 'client'
    case 503: return shuttingDown ? 'shutdown' : 'total'
    default: return String(status)
  }
}

/** The answer to a plain HTTP request for the WebSocket endpoint. */
const UPGRADE_REQUIRED = {
  statusCode: 426,
  error: 'Upgrade Required',
  code: 'upgrade_required',
  message: 'GET /ws is a WebSocket endpoint: connect with a WebSocket client (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13), e.g. new WebSocket("ws://HOST/ws?clientId=alice"); in auth mode pass the token as ?token= or Authorization: Bearer'
}

export default async function wsRoute (app: FastifyInstance) {
  app.get<{ Querystring: Static<typeof Query> }>('/ws', {
    websocket: true,
    config: { tokenInQuery: true },
    schema: { querystring: Query },
    onRequest: async (request, reply) => {
      if (!request.ws) return reply.code(426).header('upgrade', 'websocket').send(UPGRADE_REQUIRED)
      app.metrics.connectionAttempts.inc()
    },
    onResponse: async (request, reply) => {
      // only refused upgrades get here: an accepted one is hijacked
      if (request.ws && reply.statusCode >= 400) app.metrics.connectionRejections.inc({ reason: rejectionReason(reply.statusCode, app.statusReport.shuttingDown) })
    },
    preValidation: [app.checkUpgradeOrigin],
    // after validation, so a refused request never holds a slot
    preHandler: [app.acquireConnectionSlot]
  }, (socket, request) => {
    app.connections.accept(socket, request)
    socket.on('close', code => app.metrics.connectionCloses.inc({ code: closeCodeLabel(code) }))
  })
}
