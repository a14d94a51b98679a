import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId, MessageText } from '../../protocol/schemas.js'
import { commonErrors, errorResponse, sendStoreUnavailable } from './errors.js'
import { IdempotencyHeaders, idempotencyErrors, idempotentResponse, sendContractError } from './idempotency.js'
import { WsError } from '../../protocol/errors.js'
import { errorBody } from '../../plugins/core/errors.js'

const SendBody = Type.Object({
  from: { ...ClientId, description: 'sender shown to the recipient; with a user token, its own sub' },
  to: { ...ClientId, description: 'recipient client id: every connection of it gets the message' },
  text: MessageText
}, { examples: [{ from: 'billing', to: 'alice', text: 'Your invoice is ready' }] })
const SendReply = Type.Object({
  ok: Type.Literal(true),
  messageId: Type.String(),
  delivered: Type.Integer({ minimum: 0 }),
  queued: Type.Boolean()
}, { description: 'Accepted: `delivered` connections got it now; `queued` when the recipient was offline (it gets it on connecting)', examples: [{ ok: true, messageId: '0b6f4e8e-3f0a-4c1e-9a39-6c1b2f0d7a11', delivered: 1, queued: false }] })

export default async function sendRoute (app: FastifyInstance) {
  app.post<{ Body: Static<typeof SendBody> }>('/send', {
    schema: {
      tags: ['messages'],
      summary: 'Send a direct message to a client',
      description: 'Delivers `text` to every WebSocket connection of `to` as `{"type":"message",...}`; when it has none, the message waits in its inbox (INBOX_MAX, INBOX_TTL_MS) and is delivered after its next `welcome`.',
      headers: IdempotencyHeaders,
      body: SendBody,
      response: {
        200: SendReply,
        ...idempotencyErrors,
        400: errorResponse('`invalid_message`: a field is missing, empty, too long or has characters outside its pattern; the message names it'),
        403: errorResponse('`forbidden`: a user token may only send as its own sub'),
        503: errorResponse('`unavailable`: the store could not queue the message for an offline recipient; nothing was sent, retry'),
        ...commonErrors
      }
    }
  }, async (request, reply) => {
    const { from, to, text } = request.body
    if (!app.auth.maySendAs(request.principal, from)) {
      return reply.code(403).send(errorBody(403, 'forbidden', 'from: a token may only send as its own sub'))
    }
    try {
      return await idempotentResponse(app, request, reply, { client: from, frame: { type: 'send', to, text }, request: { route: 'send', from, to, text } },
        async claim => ({ ok: true as const, ...await app.directMessages.send(from, to, text, claim) }),
        result => ({ ok: true, ...result }))
    } catch (err) {
      if (err instanceof WsError) return sendContractError(reply, err)
      return sendStoreUnavailable(reply, err)
    }
  })
}
