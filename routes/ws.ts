import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId } from '../protocol/schemas.js'

const Query = Type.Object({
  clientId: Type.Optional(ClientId),
  token: Type.Optional(Type.String({ maxLength: 4096 }))
})

/** The native protocol's endpoint: its sessions are the engine's, its frames go to the dispatcher. */
export default async function wsRoute (app: FastifyInstance) {
  app.upgradeRoute<{ Querystring: Static<typeof Query> }>({
    url: '/ws',
    protocol: app.nativeProtocol,
    token: 'upgrade',
    usage: 'GET /ws is a WebSocket endpoint: connect with a WebSocket client (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13), e.g. new WebSocket("ws://HOST/ws?clientId=alice"); in auth mode pass the token as ?token= or Authorization: Bearer',
    schema: { querystring: Query },
    accepted () {}
  })
}
