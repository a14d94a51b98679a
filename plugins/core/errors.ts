import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import sjson from 'secure-json-parse'
import { Type, type TSchema } from '@sinclair/typebox'
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors'
import type { FastifyError, FastifyRequest } from 'fastify'

/**
 * One error dialect for both transports: a WebSocket frame and an HTTP request
 * that make the same mistake get the same `code` and the same message, written
 * for people: the field, then what it must be ("text: must be at most 32768
 * characters"). The dispatcher formats TypeBox's errors with it, Fastify's
 * HTTP validation (AJV) goes through the same sentence builder.
 */

/** Codes an HTTP reply may carry besides the WebSocket ones (ErrorCode in dispatcher.ts). */
export type HttpErrorCode =
  | 'not_found' | 'payload_too_large' | 'unsupported_media_type'
  | 'connection_limit_exceeded' | 'shutting_down' | 'method_not_allowed' | 'request_timeout' | 'uri_too_long' | 'upgrade_required'

/** What each HTTP-only code means (a code added to HttpErrorCode without a line here fails to compile). */
export const HTTP_ERROR_CODES: Record<HttpErrorCode, string> = {
  not_found: '404: a room never used, a route that does not exist, or an upgrade to a path that is not a WebSocket endpoint',
  payload_too_large: '413: the body is over the HTTP body limit, or a publish\'s `data` is over WS_MAX_PAYLOAD',
  unsupported_media_type: '415: a body whose content-type is neither application/json nor text/plain',
  connection_limit_exceeded: 'an upgrade refused: 503 (`scope: total`, MAX_CONNECTIONS) or 429 (`scope: client`, MAX_CONNECTIONS_PER_CLIENT), with `limit` and `current`',
  shutting_down: '503: the server is shutting down',
  method_not_allowed: '405: the route does not take this method',
  request_timeout: '408: the request did not arrive within HTTP_REQUEST_TIMEOUT_MS',
  uri_too_long: '414: a path parameter is longer than the router accepts (512 characters)',
  upgrade_required: '426: a plain HTTP request for GET /ws; connect with a WebSocket client'
}

/** One failed rule of a schema, whichever validator found it. */
interface Issue {
  /** JSON pointer of the value (`/text`, `/patch/a`), '' for the whole value. */
  path: string
  rule: 'required' | 'type' | 'minLength' | 'maxLength' | 'pattern' | 'minimum' | 'maximum' |
  'exclusiveMinimum' | 'exclusiveMaximum' | 'const' | 'enum' | 'union' | 'minProperties' | 'maxProperties' | 'other'
  /** The rule's bound: a length, a pattern, a type name, allowed values. */
  limit?: unknown
}

const ARTICLE: Record<string, string> = { integer: 'an integer', object: 'an object', array: 'an array' }
const typeName = (type: unknown): string => Array.isArray(type)
  ? type.map(typeName).join(' or ')
  : ARTICLE[String(type)] ?? `a ${String(type)}`
const plural = (n: unknown, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`

/** `/patch/a/0` → `patch.a.0`; the whole value is named after the transport's unit. */
function fieldOf (path: string, whole: string): string {
  if (path === '') return whole
  return path.slice(1).split('/').map(p => p.replace(/~1/g, '/').replace(/~0/g, '~')).join('.')
}

/** The sentence for one issue: "field: must …". */
function sentence (issue: Issue, whole: string): string {
  const field = fieldOf(issue.path, whole)
  const l = issue.limit
  switch (issue.rule) {
    case 'required': return `${field}: is required`
    case 'type': return `${field}: must be ${typeName(l)}`
    case 'minLength': return `${field}: must be at least ${plural(l, 'character')}`
    case 'maxLength': return `${field}: must be at most ${plural(l, 'character')}`
    case 'pattern': return `${field}: must match ${String(l)}`
    case 'minimum': return `${field}: must be >= ${String(l)}`
    case 'maximum': return `${field}: must be <= ${String(l)}`
    case 'exclusiveMinimum': return `${field}: must be > ${String(l)}`
    case 'exclusiveMaximum': return `${field}: must be < ${String(l)}`
    case 'const': return `${field}: must be ${JSON.stringify(l)}`
    case 'enum': return `${field}: must be one of ${(l as unknown[]).map(v => JSON.stringify(v)).join(', ')}`
    case 'union': return `${field}: must be ${String(l)}`
    case 'minProperties': return `${field}: must have at least ${plural(l, 'field')}`
    case 'maxProperties': return `${field}: must have at most ${plural(l, 'field')}`
    default: return `${field}: is invalid`
  }
}

const TYPEBOX_TYPES: Partial<Record<ValueErrorType, string>> = {
  [ValueErrorType.String]: 'string',
  [ValueErrorType.Number]: 'number',
  [ValueErrorType.Integer]: 'integer',
  [ValueErrorType.Boolean]: 'boolean',
  [ValueErrorType.Object]: 'object',
  [ValueErrorType.Array]: 'array',
  [ValueErrorType.Null]: 'null'
}

/** One branch of a union, with its bounds: "a string of at most 128 characters". */
function describeForm (s: TSchema): string {
  if (s.const !== undefined) return JSON.stringify(s.const)
  const bounds = [
    s.minLength !== undefined && s.minLength > 0 ? `at least ${plural(s.minLength, 'character')}` : '',
    s.maxLength !== undefined ? `at most ${plural(s.maxLength, 'character')}` : ''
  ].filter(Boolean)
  return bounds.length > 0 ? `${typeName(s.type)} of ${bounds.join(' and ')}` : typeName(s.type)
}

function typeboxIssue (e: ValueError): Issue {
  const s = e.schema as TSchema
  const path = e.path
  const type = TYPEBOX_TYPES[e.type]
  if (type) return { path, rule: 'type', limit: type }
  switch (e.type) {
    case ValueErrorType.ObjectRequiredProperty: return { path, rule: 'required' }
    case ValueErrorType.StringMinLength: return { path, rule: 'minLength', limit: s.minLength }
    case ValueErrorType.StringMaxLength: return { path, rule: 'maxLength', limit: s.maxLength }
    case ValueErrorType.StringPattern: return { path, rule: 'pattern', limit: s.pattern }
    case ValueErrorType.IntegerMinimum: case ValueErrorType.NumberMinimum: return { path, rule: 'minimum', limit: s.minimum }
    case ValueErrorType.IntegerMaximum: case ValueErrorType.NumberMaximum: return { path, rule: 'maximum', limit: s.maximum }
    case ValueErrorType.IntegerExclusiveMinimum: case ValueErrorType.NumberExclusiveMinimum: return { path, rule: 'exclusiveMinimum', limit: s.exclusiveMinimum }
    case ValueErrorType.IntegerExclusiveMaximum: case ValueErrorType.NumberExclusiveMaximum: return { path, rule: 'exclusiveMaximum', limit: s.exclusiveMaximum }
    case ValueErrorType.Literal: return { path, rule: 'const', limit: s.const }
    case ValueErrorType.ObjectMinProperties: return { path, rule: 'minProperties', limit: s.minProperties }
    case ValueErrorType.ObjectMaxProperties: return { path, rule: 'maxProperties', limit: s.maxProperties }
    case ValueErrorType.Union: return { path, rule: 'union', limit: (s.anyOf as TSchema[]).map(describeForm).join(' or ') }
    default: return { path, rule: 'other' }
  }
}

/** The message for the first TypeBox error of a WebSocket message. */
export function typeboxMessage (error: ValueError | undefined): string {
  return error ? sentence(typeboxIssue(error), 'message') : 'message: is invalid'
}

/** The subset of an AJV error object Fastify hands its schemaErrorFormatter. */
export interface AjvError { instancePath: string, schemaPath: string, keyword: string, params: Record<string, any> }

function ajvIssue (errors: AjvError[]): Issue {
  const e = errors[0]
  // AJV lists the errors of each branch of an anyOf before the anyOf itself: report the union
  const union = errors.find(x => (x.keyword === 'anyOf' || x.keyword === 'oneOf') && e.schemaPath.startsWith(x.schemaPath + '/'))
  if (union) {
    const branches = errors.filter(x => x !== union && x.schemaPath.startsWith(union.schemaPath + '/'))
    const forms = branches.map(b => b.keyword === 'type' ? typeName(b.params.type) : b.keyword === 'const' ? JSON.stringify(b.params.allowedValue) : 'another form')
    return { path: union.instancePath, rule: 'union', limit: [...new Set(forms)].join(' or ') }
  }
  const p = e.params
  const path = e.instancePath
  switch (e.keyword) {
    case 'required': return { path: `${path}/${String(p.missingProperty)}`, rule: 'required' }
    case 'type': return { path, rule: 'type', limit: p.type }
    case 'minLength': case 'maxLength': case 'minimum': case 'maximum':
    case 'exclusiveMinimum': case 'exclusiveMaximum': case 'minProperties': case 'maxProperties':
      return { path, rule: e.keyword, limit: p.limit }
    case 'pattern': return { path, rule: 'pattern', limit: p.pattern }
    case 'const': return { path, rule: 'const', limit: p.allowedValue }
    case 'enum': return { path, rule: 'enum', limit: p.allowedValues }
    default: return { path, rule: 'other' }
  }
}

/** Fastify's schemaErrorFormatter: the HTTP side of the dialect, `code: invalid_message`. */
export function schemaErrorFormatter (errors: AjvError[], dataVar: string): Error {
  const whole = dataVar === 'querystring' ? 'query' : dataVar
  const message = errors.length > 0 ? sentence(ajvIssue(errors), whole) : `${whole}: is invalid`
  return Object.assign(new Error(message), { code: 'invalid_message', statusCode: 400 })
}

/** A JSON text that cannot be accepted: not JSON, or a key that could reach a prototype. */
export class InvalidJsonError extends Error {
  readonly code = 'invalid_message'
  readonly statusCode = 400
}

/**
 * Parses a WebSocket frame or an HTTP body; keys `__proto__` and
 * `constructor.prototype` are refused (secure-json-parse), with a message
 * that names them rather than calling the text "not valid JSON".
 */
export function parseJson (text: string): unknown {
  try {
    return sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' })
  } catch (err) {
    const reason = (err as Error).message
    if (reason === 'Object contains forbidden prototype property') {
      throw new InvalidJsonError(`forbidden property name ${/"__proto__"\s*:/.test(text) ? '__proto__' : 'constructor.prototype'}`)
    }
    throw new InvalidJsonError(`not valid JSON (${reason})`)
  }
}

/** The error body of every HTTP reply: Fastify's shape plus `code` and details. */
export const ErrorSchema = Type.Object({
  statusCode: Type.Integer({ description: 'the HTTP status' }),
  error: Type.String({ description: 'the HTTP reason phrase (`connection_limit_exceeded` on refused upgrades)' }),
  code: Type.String({ description: 'machine-readable: the WebSocket error codes (invalid_message, version_conflict, …) plus the HTTP ones (unauthorized, payload_too_large, …); see /docs/asyncapi.json and docs/protocol.md' }),
  message: Type.String({ description: 'for people: names the field and the limit' })
}, {
  $id: 'Error',
  title: 'Error',
  additionalProperties: true,
  description: 'Every error reply. More fields may follow the code (e.g. `currentVersion`, `limit`).',
  examples: [{ statusCode: 400, error: 'Bad Request', code: 'invalid_message', message: 'text: must be at most 32768 characters' }]
})

/** A reference to ErrorSchema for route response schemas (registered by the errors plugin). */
export const ErrorRef = Type.Unsafe<{ statusCode: number, error: string, code: string, message: string }>({ $ref: 'Error#' })

/** An error body for an explicit `reply.code(n).send(...)`. */
export function errorBody (statusCode: number, code: string, message: string, extra?: Record<string, unknown>) {
  return { statusCode, error: STATUS_CODES[statusCode] ?? 'Error', code, message, ...extra }
}

/** Codes for Fastify's own errors (and anything else without a contract code), by status. */
const BY_STATUS: Record<number, string> = {
  400: 'invalid_message',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  408: 'request_timeout',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  429: 'rate_limited',
  503: 'unavailable'
}

/** Gives an error Fastify (or a plugin) raised our `code` and a message for people. */
function normalize (err: FastifyError, request: FastifyRequest): void {
  const status = err.statusCode ?? 500
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      err.message = `body: must be at most ${request.routeOptions.bodyLimit} bytes`
      break
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      err.message = `content-type: ${JSON.stringify(request.headers['content-type'] ?? '')} is not supported; send application/json`
      break
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      err.message = 'body: must not be empty when content-type is application/json'
      break
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      err.message = 'content-length: does not match the body'
      break
  }
  // our codes are snake_case words; Fastify's (FST_…), Node's (ERR_…, ECONN…) and drivers' (SQLITE_…) are replaced
  if (typeof err.code !== 'string' || !/^[a-z]+(_[a-z]+)*$/.test(err.code)) {
    (err as { code: string }).code = BY_STATUS[status] ?? (status >= 500 ? 'internal_error' : 'invalid_message')
  }
}

/**
 * The HTTP half of the dialect, for the whole app: validation errors are worded
 * by `schemaErrorFormatter`, JSON bodies are parsed by `parseJson` (as frames
 * are), and every error reply gets a `code`. The error handler only rewrites
 * the error and rethrows it, so Fastify's default handler still logs and sends it.
 */
export default fp(async function errors (app) {
  app.addSchema(ErrorSchema)
  app.setSchemaErrorFormatter(schemaErrorFormatter)
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    if (body === '') {
      done(Object.assign(new Error('body: must not be empty when content-type is application/json'), { code: 'invalid_message', statusCode: 400 }), undefined)
      return
    }
    try {
      done(null, parseJson(body as string))
    } catch (err) {
      done(err as Error, undefined)
    }
  })
  app.setErrorHandler((err: FastifyError, request) => {
    normalize(err, request)
    throw err
  })
  // an unknown route answers in the same shape, with its code; the path without its query (which may hold a token)
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(errorBody(404, 'not_found', `Route ${request.method}:${request.url.split('?')[0]} not found`))
  })
}, { name: 'errors', fastify: '5.x' })

/** The store could not read or commit; the caller may retry. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError'
  /** True when the failure was already logged (by StoreHealth): callers need not log it again. */
  reported = false
}
