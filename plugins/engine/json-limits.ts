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
 * The first field of an object (a WebSocket message, an HTTP body) whose value
 * nests deeper than `limit`, with the message to answer; null when all fit.
 * The object itself is the envelope: its fields get the whole limit each.
 */
export function tooDeepField (fields: Record<string, unknown>, limit: number): string | null {
  for (const key of Object.keys(fields)) {
    if (jsonDepth(fields[key], limit) < 0) return depthMessage(key.slice(0, 64), limit)
  }
  return null
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
