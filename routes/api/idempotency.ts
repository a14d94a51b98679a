import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { ERROR_STATUS, WsError } from '../../protocol/errors.js'
import { IDEMPOTENCY_KEY_MAX_LENGTH } from '../../protocol/limits.js'
import type { IdempotencyClaim } from '../../plugins/store/interface.js'
import { clientKeys } from '../../plugins/store/idempotency.js'
import { errorResponse } from './errors.js'
import { errorBody } from '../../plugins/core/errors.js'

/**
 * The `Idempotency-Key` request header (IETF httpapi idempotency-key draft) on
 * the HTTP writes. A write made as a client (its `from`, or a user token's
 * sub) shares that client's keys with its WebSocket frames; one made as the
 * server is keyed by the client key (as the rate limit counts). The first
 * request is applied and its result recorded with it; a repeat within
 * IDEMPOTENCY_TTL_MS gets the reply again, unapplied; a repeat while the first
 * is still in progress gets 409 `idempotency_in_progress`; the key with
 * another body 422 `idempotency_conflict`. Errors are not recorded (nothing
 * was applied).
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

/** Whose keys a write's Idempotency-Key is one of, and what a repeat must match. */
export interface IdempotencyScope {
  /** The client the write is made as; undefined for a write made as the server. */
  client: string | undefined
  /** The write as that client's WebSocket frame carries it (`type` and its fields): what its key is checked against. */
  frame: Record<string, unknown>
  /** What a server write's key is checked against (the route and its fields). */
  request: Record<string, unknown>
}

/**
 * Runs a write under the request's Idempotency-Key (if any) and sends its
 * response. `apply` gets the claim to hand to the store write; `fromResult`
 * turns a store record's result into the response body: a client's record is
 * the write's result, which its WebSocket frames replay too; a server write's
 * record is the whole response (or the result, when the process died before
 * it was recorded).
 */
export async function idempotentResponse (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, scope: IdempotencyScope,
  apply: (claim?: IdempotencyClaim) => Promise<unknown>, fromResult: (result: Record<string, unknown>) => unknown): Promise<FastifyReply> {
  const key = keyOf(request)
  // no key: nothing to claim, record or replay (and no owner to name)
  if (key === undefined) return reply.code(200).send(await apply(undefined))
  const shared = scope.client !== undefined
  const owner = shared ? clientKeys(scope.client as string) : `http:${request.clientKey}`
  const { value, duplicate } = await app.idempotency.run<RecordedResponse>(owner, key, shared ? scope.frame : scope.request, async claim => {
    const response = { status: 200, body: await apply(claim) }
    // the store committed the write's result with it; what the response adds replaces it: a server write
    // records the whole response, a client's write its fields (`delivered`), which its frames can replay too
    if (claim) await app.idempotency.remember(claim, shared ? resultOf(response.body) : response).catch(err => request.log.warn({ event: 'idempotency.record_failed', err }, 'could not record the response of an idempotent request'))
    return response
  }, result => {
    const r = result as Partial<RecordedResponse> & Record<string, unknown>
    return typeof r.status === 'number' && 'body' in r ? { status: r.status, body: r.body } : { status: 200, body: fromResult(r) }
  }, 'refuse')
  if (duplicate) reply.header('idempotent-replayed', 'true')
  return reply.code(value.status).send(value.body)
}

/** A response body as a write's result: without the HTTP body's `ok`. */
function resultOf (body: unknown): unknown {
  if (body === null || typeof body !== 'object') return body
  const { ok: _ok, ...result } = body as Record<string, unknown>
  return result
}

/** A contract error in Fastify's error shape plus `code` and its details (rethrows anything else). */
export function sendContractError (reply: FastifyReply, err: unknown) {
  if (!(err instanceof WsError)) throw err
  const [statusCode] = ERROR_STATUS[err.code]
  return reply.code(statusCode).send(errorBody(statusCode, err.code, err.message, err.extra))
}
