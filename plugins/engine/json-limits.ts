import fp from 'fastify-plugin'
import { depthMessage } from '../../protocol/limits.js'
import { errorBody } from '../core/errors.js'

export { depthMessage }

/** JSON_MAX_DEPTH when nothing configures it. */
export const DEFAULT_JSON_MAX_DEPTH = 64

/**
 * How deep a JSON value nests, or -1 as soon as it passes `limit`: an
 * iterative walk with its own stack, so no input can overflow the call stack.
 * A scalar is depth 0, `{}` and `[]` are 1, `{"a":[1]}` is 2.
 */
export function jsonDepth (value: unknown, limit: number): number {
  if (value === null || typeof value !== 'object') return 0
  const values: unknown[] = [value]
  const depths: number[] = [1]
  let deepest = 0
  while (values.length > 0) {
    const current = values.pop() as object
    const depth = depths.pop() as number
    if (depth > limit) return -1
    if (depth > deepest) deepest = depth
    const children = Array.isArray(current) ? current : Object.values(current)
    for (const child of children) {
      if (child !== null && typeof child === 'object') {
        values.push(child)
        depths.push(depth + 1)
      }
    }
  }
  return deepest
}

/**
 * How deep a JSON text nests, or -1 as soon as it passes `limit`, read from
 * the text without parsing it (a state machine over brackets and strings):
 * for JSON that is checked before anything parses or re-serializes it.
 */
export function jsonTextDepth (text: string, limit: number): number {
  let depth = 0
  let deepest = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++ // backslash: skip the escaped character
      else if (c === 0x22) inString = false
      continue
    }
    if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return -1
      if (depth > deepest) deepest = depth
    } else if (c === 0x5d || c === 0x7d) depth--
  }
  return deepest
}

/**
 * The path of the first field whose value nests deeper than `limit`; with
 * `levels` 2, one level into an object whose own field is the culprit
 * (`data.channel` of a Pusher frame, not just `data`); null when all fit.
 */
export function tooDeepPath (fields: Record<string, unknown>, limit: number, levels = 1): string | null {
  for (const key of Object.keys(fields)) {
    const value = fields[key]
    if (jsonDepth(value, limit) >= 0) continue
    const name = key.slice(0, 64)
    if (levels > 1 && value !== null && typeof value === 'object' && !Array.isArray(value) && limit > 1) {
      const inner = tooDeepPath(value as Record<string, unknown>, limit - 1, levels - 1)
      if (inner !== null) return `${name}.${inner}`
    }
    return name
  }
  return null
}

/**
 * The first field of an object (a WebSocket message, an HTTP body) whose value
 * nests deeper than `limit`, with the message to answer naming its path;
 * null when all fit. The object itself is the envelope: its fields get the
 * whole limit each.
 */
export function tooDeepField (fields: Record<string, unknown>, limit: number, levels = 1): string | null {
  const path = tooDeepPath(fields, limit, levels)
  return path === null ? null : depthMessage(path, limit)
}

export interface JsonLimitsOptions {
  /** JSON_MAX_DEPTH: deepest nesting of a field's value in any HTTP body [64]. */
  maxDepth?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    jsonLimits: { maxDepth: number }
  }
}

/**
 * Refuses, with 400 naming the field and the limit, every HTTP body whose
 * fields nest deeper than JSON_MAX_DEPTH, before validation and handlers see
 * it (the WebSocket dispatcher applies the same check to each frame).
 */
export default fp<JsonLimitsOptions>(async function jsonLimits (app, opts) {
  const maxDepth = opts.maxDepth ?? DEFAULT_JSON_MAX_DEPTH
  app.decorate('jsonLimits', { maxDepth })
  // a callback hook: no promise and microtask per request
  app.addHook('preValidation', function refuseDeepBody (request, reply, done) {
    const body = request.body
    if (body === null || typeof body !== 'object') return done()
    const problem = Array.isArray(body)
      ? (jsonDepth(body, maxDepth) < 0 ? depthMessage('body', maxDepth) : null)
      : tooDeepField(body as Record<string, unknown>, maxDepth)
    if (problem === null) return done()
    reply.code(400).send(errorBody(400, 'invalid_message', problem, { limit: maxDepth }))
  })
}, { name: 'json-limits', fastify: '5.x' })
