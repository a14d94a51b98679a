import { depthMessage } from './limits.js'

/** A room's JSON state: always an object at the top level. */
export type RoomState = Record<string, unknown>

/** The patch itself is unusable (not an object, a forbidden key, too deep). */
export class InvalidPatchError extends Error {
  override name = 'InvalidPatchError'
}

/** The deepest patch any configuration accepts (JSON_MAX_DEPTH's maximum): `merge` recurses this deep at most. */
export const MAX_PATCH_DEPTH = 1000

/** Keys that could reach an object's prototype when assigned: refused anywhere in a patch. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype'])

function isObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/**
 * Throws InvalidPatchError when a patch holds a forbidden key at any depth, or
 * nests deeper than `maxDepth`. Iterative (its own stack), so no patch can
 * overflow the call stack here; `merge` below recurses only as deep as the
 * patch, which this bounds.
 */
function checkPatch (patch: Record<string, unknown>, maxDepth: number): void {
  const stack: Array<{ value: unknown, path: string, depth: number }> = [{ value: patch, path: '', depth: 1 }]
  while (stack.length > 0) {
    const { value, path, depth } = stack.pop() as { value: unknown, path: string, depth: number }
    if (depth > maxDepth) throw new InvalidPatchError(depthMessage('patch', maxDepth))
    if (Array.isArray(value)) {
      value.forEach((v, i) => { if (v !== null && typeof v === 'object') stack.push({ value: v, path: `${path}/${i}`, depth: depth + 1 }) })
      continue
    }
    for (const key of Object.keys(value as object)) {
      if (FORBIDDEN_KEYS.has(key)) throw new InvalidPatchError(`the key ${JSON.stringify(key)} is not allowed (at ${path || '/'})`)
      const child = (value as Record<string, unknown>)[key]
      if (child !== null && typeof child === 'object') stack.push({ value: child, path: `${path}/${key}`, depth: depth + 1 })
    }
  }
}

function merge (target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch
  const result: Record<string, unknown> = isObject(target) ? { ...target } : {}
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key]
    // own data properties only: the key set was checked, so this never touches a prototype
    else Object.defineProperty(result, key, { value: merge(result[key], value), enumerable: true, writable: true, configurable: true })
  }
  return result
}

/**
 * Applies an RFC 7396 JSON Merge Patch to a room state and returns the new state;
 * the input is left untouched (unchanged branches are shared, never mutated).
 */
export function applyMergePatch (state: RoomState, patch: unknown, maxDepth = MAX_PATCH_DEPTH): RoomState {
  if (!isObject(patch)) throw new InvalidPatchError('a state patch must be a JSON object')
  checkPatch(patch, Math.min(maxDepth, MAX_PATCH_DEPTH))
  return merge(state, patch) as RoomState
}
