import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { ERROR_STATUS, WsError } from '../../protocol/errors.js'
import { IDEMPOTENCY_KEY_MAX_LENGTH } from '../../protocol/limits.js'
import type { IdempotencyClaim } from '../../plugins/store/interface.js'
import { errorResponse } from './errors.js'
import { errorBody } from '../../plugins/core/errors.js'

/**
 * The `Idempotency-Key` request header (IETF httpapi idempotency-key draft) on
 * the HTTP writes: keyed by the client key (as the rate limit counts), the
 * first request is applied and its status and body recorded; a repeat within
 * IDEMPOTENCY_TTL_MS gets them again, unapplied; a repeat while the first is
 * still in progress gets 409 `idempotency_in_progress`; the key with another
 * body 422 `idempotency_conflict`. Errors are not recorded (nothing was applied).
 */

/** The header in the route schemas (documented in OpenAPI; checked by `keyOf`, which names the limit). */
export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ description: `a key of 1-${IDEMPOTENCY_KEY_MAX_LENGTH} characters (a Structured Field string, quoted or not): a repeat within IDEMPOTENCY_TTL_MS gets the first response, not applied again` }))
})

export const idempotencyErrors = {
  409: errorResponse('`idempotency_in_progress`: a request with this Idempotency-Key is still being handled; retry when it finished'),
  422: errorResponse('`idempotency_conflict`: this Idempotency-Key was used for a request with another body')
}

/** What a key records: the response as it was sent. */
export interface RecordedResponse { status: number, body: unknown }

/** The key a request carries, unquoted; undefined without one; `invalid_message` for a bad one. */
export function keyOf (request: FastifyRequest): string | undefined {
  const header = request.headers['idempotency-key']
  if (header === undefined) return undefined
  if (Array.isArray(header)) throw new WsError('invalid_message', 'Idempotency-Key: must be sent once')
  const key = header.length >= 2 && header.startsWith('"') && header.endsWith('"') ? header.slice(1, -1) : header
  if (key.length < 1 || key.length > IDEMPOTENCY_KEY_MAX_LENGTH) {
    throw new WsError('invalid_message', `Idempotency-Key: must be 1-${IDEMPOTENCY_KEY_MAX_LENGTH} characters (got ${key.length})`, { limit: IDEMPOTENCY_KEY_MAX_LENGTH })
  }
  return key
}

/**
 * Runs a write under the request's Idempotency-Key (if any) and sends its
 * response. `apply` gets the claim to hand to the store write; `fromResult`
 * turns a store record's result (a write whose response was not recorded yet
 * when the process died) into the response body.
 */
export async function idempotentResponse (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, body: unknown,
  apply: (claim?: IdempotencyClaim) => Promise<unknown>, fromResult: (result: Record<string, unknown>) => unknown): Promise<FastifyReply> {
  const key = keyOf(request)
  // no key: nothing to claim, record or replay (and no owner to name)
  if (key === undefined) return reply.code(200).send(await apply(undefined))
  const { value, duplicate } = await app.idempotency.run<RecordedResponse>(`http:${request.clientKey}`, key, body, async claim => {
    const response = { status: 200, body: await apply(claim) }
    // the store committed the write's result with it; the whole response replaces it
    if (claim) await app.idempotency.remember(claim, response).catch(err => request.log.warn({ event: 'idempotency.record_failed', err }, 'could not record the response of an idempotent request'))
    return response
  }, result => {
    const r = result as Partial<RecordedResponse> & Record<string, unknown>
    return typeof r.status === 'number' && 'body' in r ? { status: r.status, body: r.body } : { status: 200, body: fromResult(r) }
  }, 'refuse')
  if (duplicate) reply.header('idempotent-replayed', 'true')
  return reply.code(value.status).send(value.body)
}

/** A contract error in Fastify's error shape plus `code` and its details (rethrows anything else). */
export function sendContractError (reply: FastifyReply, err: unknown) {
  if (!(err instanceof WsError)) throw err
  const [statusCode] = ERROR_STATUS[err.code]
  return reply.code(statusCode).send(errorBody(statusCode, err.code, err.message, err.extra))
}
