import type { FastifyReply } from 'fastify'
import { Type } from '@sinclair/typebox'
import { StoreUnavailableError } from '../../plugins/store.js'

/** Fastify's error shape, which every /api error keeps (fields may be added). */
export const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String()
}, { additionalProperties: true })

/** A store outage (cannot read or write) is 503 `unavailable` with its cause, never a 500; anything else is rethrown. */
export function sendStoreUnavailable (reply: FastifyReply, err: unknown) {
  if (!(err instanceof StoreUnavailableError)) throw err
  if (!err.reported) reply.log.error({ event: 'store.operation_failed', err }, 'a store operation failed')
  return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', code: 'unavailable', message: `${err.message}; retry later` })
}
