import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId } from '../protocol/schemas.js'
import { RefreshFields } from '../protocol/client-frames.js'
import { WsError } from '../protocol/errors.js'
import { AuthError } from '../plugins/engine/auth.js'
import type { Principal } from '../plugins/core/identity.js'

const Query = Type.Object({
  clientId: Type.Optional(ClientId),
  token: Type.Optional(Type.String({ maxLength: 4096 })),
  probe: Type.Optional(Type.Literal('1', { description: 'answer with an upgrade closed at once (1000 "probe"), after every check and with no session: a client on a fallback transport asks whether its WebSocket works again' }))
})

/** The native protocol's endpoint: its sessions are the engine's, its frames go to the dispatcher. */
export default async function wsRoute (app: FastifyInstance) {
  app.upgradeRoute<{ Querystring: Static<typeof Query> }>({
    url: '/ws',
    protocol: app.nativeProtocol,
    token: 'upgrade',
    usage: 'GET /ws is a WebSocket endpoint: connect with a WebSocket client (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13), e.g. new WebSocket("ws://HOST/ws?clientId=alice"); in auth mode pass the token as ?token= or Authorization: Bearer',
    schema: { querystring: Query },
    probe: true,
    accepted () {}
  })

  // `refresh`: a fresh token for a live connection, verified as at the upgrade; the engine swaps it in (expiry, claims)
  const auth = app.auth
  const sessions = app.sessions
  app.dispatcher.register('refresh', RefreshFields, async (conn, msg) => {
    if (!auth.enabled && !auth.hasStaticTokens) throw new WsError('invalid_message', 'refresh: the server runs in open mode (no AUTH_SECRET, AUTH_JWKS_URL or AUTH_PUBLIC_KEY); there is no token to refresh')
    let principal: Principal
    try {
      const fixed = auth.staticPrincipal(msg.token)
      if (fixed === undefined && !auth.enabled) throw new AuthError('invalid', 'invalid token')
      principal = fixed ?? await auth.verify(msg.token)
    } catch (err) {
      const failure = err instanceof AuthError ? err : new AuthError('invalid', 'invalid token')
      app.log.warn({ event: 'auth.refresh_rejected', connectionId: conn.id, clientId: conn.clientId, reason: failure.reason }, 'refresh refused: the connection keeps its token')
      throw new WsError('unauthorized', `refresh: ${failure.message}; the connection keeps its current token`, { reason: failure.reason })
    }
    sessions.refresh(conn, principal)
    return { type: 'ack', expiresAt: principal.exp === undefined ? null : new Date(principal.exp * 1000).toISOString() }
  })
}
