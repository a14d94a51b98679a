import { randomUUID } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { Connection } from '../plugins/transport/connections.js'
import { ClientId, RequestId } from '../protocol/schemas.js'
import type { Welcome } from '../protocol/frames.js'
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

/**
 * The limits of message fields a client can hit, read from the schemas the
 * dispatcher validates with (and the upgrade's clientId), so `welcome` cannot
 * announce a bound other than the enforced one.
 */
export function messageFieldLimits (app: FastifyInstance) {
  const field = (type: string, name: string) => app.dispatcher.schemas.get(type)?.properties[name]
  const room = field('join', 'room')
  return {
    messageBurst: app.config.WS_MESSAGES_PER_SECOND * 2,
    textMaxLength: field('send', 'text')?.maxLength,
    roomNameMaxLength: room?.maxLength,
    roomNamePattern: room?.pattern,
    clientIdMaxLength: ClientId.maxLength,
    clientIdPattern: ClientId.pattern,
    execCodeMaxLength: field('exec', 'code')?.maxLength,
    requestIdMaxLength: RequestId.anyOf[0].maxLength
  }
}

export default async function wsRoute (app: FastifyInstance) {
  let fieldLimits: ReturnType<typeof messageFieldLimits> | undefined
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
    // Nothing holds the upgrade's HTTP objects once the connection is open: the ServerResponse
    // stays attached to the TCP socket, and @fastify/websocket's own 'error' listener closes
    // over the request and reply. Left as they are, they keep about 2 KB per connection
    // (response, Fastify request and reply, headers) alive for its whole life. The listener
    // below replaces theirs (its default logs and terminates; so does this one).
    const raw = request.raw.socket as Socket & { _httpMessage?: ServerResponse | null }
    raw._httpMessage?.detachSocket(raw)
    socket.removeAllListeners('error')
    const clientId = request.principal?.sub ?? request.query.clientId ?? `anon-${randomUUID()}`
    const conn = new Connection(socket, clientId, request.clientKey, request.ip)
    conn.principal = request.principal
    const log = app.log

    // frames sent before the welcome (a pipelining client) are handled once the connection is registered
    let early: Array<[Buffer | ArrayBuffer | Buffer[], boolean]> | null = []
    const dispatch = (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
      app.dispatcher.handle(conn, data, isBinary).catch(err => {
        log.error({ event: 'ws.dispatch_failed', connectionId: conn.id, err }, 'dispatch failed')
      })
    }
    socket.on('message', (data, isBinary) => {
      if (early) early.push([data, isBinary])
      else dispatch(data, isBinary)
    })
    socket.on('close', (code, reason) => {
      // registered with the fanout but never added: give the registration back here
      if (early) app.fanout.clientDisconnected(clientId)
      early = null
      app.connections.remove(conn)
      app.metrics.connectionCloses.inc({ code: closeCodeLabel(code) })
      log.info({ event: 'connection.close', connectionId: conn.id, clientId, clientKey: conn.clientKey, code, reason: reason.toString().slice(0, 120), durationMs: Date.now() - conn.openedAt }, 'connection closed')
    })
    socket.on('error', err => {
      log.debug({ event: 'connection.error', connectionId: conn.id, err }, 'connection error')
      // ws has already queued its close frame (1002, 1007, 1009): write it out, then end the socket
      conn.uncork()
      socket.terminate()
    })

    const welcome = () => {
      const config = app.config
      const frame: Welcome = {
        type: 'welcome',
        clientId,
        connectionId: conn.id,
        serverId: app.serverId,
        timestamp: new Date().toISOString(),
        heartbeatIntervalMs: app.heartbeat.intervalMs,
        limits: {
          maxPayload: config.WS_MAX_PAYLOAD,
          messagesPerSecond: config.WS_MESSAGES_PER_SECOND,
          maxRoomsPerConnection: config.MAX_ROOMS_PER_CONNECTION,
          roomHistorySize: config.ROOM_HISTORY_SIZE,
          roomStateMaxBytes: config.ROOM_STATE_MAX_BYTES,
          ...(fieldLimits ??= messageFieldLimits(app)),
          jsonMaxDepth: config.JSON_MAX_DEPTH
        }
      }
      conn.send(frame)
      app.connections.add(conn)
      log.info({ event: 'connection.open', connectionId: conn.id, clientId, clientKey: conn.clientKey, connections: app.connections.size }, 'connection opened')
    }

    // reachable from every instance before the welcome: a message sent after it is delivered, never queued
    app.fanout.clientConnected(clientId).then(() => {
      if (early === null) return // closed meanwhile
      welcome()
      const pending = early
      early = null
      for (const [data, isBinary] of pending) dispatch(data, isBinary)
    }, err => {
      log.error({ event: 'ws.dispatch_failed', connectionId: conn.id, err }, 'could not register the connection')
      socket.terminate()
    })
  })
}
