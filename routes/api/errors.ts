import type { FastifyReply } from 'fastify'
import { Type } from '@sinclair/typebox'
import { ErrorRef } from '../../plugins/core/errors.js'
import { errorBody, StoreUnavailableError } from '../../plugins/core/errors.js'

/** Fastify's error shape plus `code`, which every /api error keeps (fields may be added): the shared `Error` schema. */
export const ErrorBody = ErrorRef

/** An error response of a route: the shared `Error` schema, with what this status means here. */
export function errorResponse (description: string) {
  return Type.Unsafe<typeof ErrorRef.static>({ $ref: 'Error#', description })
}

/** The error responses every /api route can give, besides its own. */
export const commonErrors = {
  401: errorResponse('`unauthorized`: auth mode (AUTH_SECRET set) and no valid bearer token'),
  429: errorResponse('`rate_limited`: more than RATE_LIMIT_MAX requests in RATE_LIMIT_WINDOW_MS from this client; see `retry-after`')
}

/** A store outage (cannot read or write) is 503 `unavailable` with its cause, never a 500; anything else is rethrown. */
export function sendStoreUnavailable (reply: FastifyReply, err: unknown) {
  if (!(err instanceof StoreUnavailableError)) throw err
  if (!err.reported) reply.log.error({ event: 'store.operation_failed', err }, 'a store operation failed')
  return reply.code(503).send(errorBody(503, 'unavailable', `${err.message}; retry later`))
}
