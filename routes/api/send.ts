import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ClientId, MessageText } from '../../plugins/direct-messages.js'
import { ErrorBody, sendStoreUnavailable } from './errors.js'

const SendBody = Type.Object({ from: ClientId, to: ClientId, text: MessageText })
const SendReply = Type.Object({
  ok: Type.Literal(true),
  messageId: Type.String(),
  delivered: Type.Integer({ minimum: 0 }),
  queued: Type.Boolean()
})

export default async function sendRoute (app: FastifyInstance) {
  app.post<{ Body: Static<typeof SendBody> }>('/send', {
    schema: {
      body: SendBody,
      response: { 200: SendReply, 400: ErrorBody, 403: ErrorBody, 503: ErrorBody }
    }
  }, async (request, reply) => {
    const { from, to, text } = request.body
    const principal = request.principal
    if (principal && principal.role !== 'service' && principal.sub !== from) {
      return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'a token may only send as its own sub' })
    }
    try {
      const result = await app.directMessages.send(from, to, text)
      return { ok: true as const, ...result }
    } catch (err) {
      return sendStoreUnavailable(reply, err)
    }
  })
}
