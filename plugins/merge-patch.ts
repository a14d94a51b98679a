import { InvalidPatchError, type RoomState } from './store.js'

/** Keys that could reach an object's prototype when assigned: refused anywhere in a patch. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype'])

function isObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** Throws InvalidPatchError when a patch (at any depth) holds a forbidden key. */
function checkKeys (value: unknown, path: string): void {
  if (Array.isArray(value)) {
    value.forEach((v, i) => checkKeys(v, `${path}/${i}`))
    return
  }
  if (!isObject(value)) return
  for (const key of Object.keys(value)) {
    if (FORBIDDEN_KEYS.has(key)) throw new InvalidPatchError(`the key ${JSON.stringify(key)} is not allowed (at ${path || '/'})`)
    checkKeys(value[key], `${path}/${key}`)
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
export function applyMergePatch (state: RoomState, patch: unknown): RoomState {
  if (!isObject(patch)) throw new InvalidPatchError('a state patch must be a JSON object')
  checkKeys(patch, '')
  return merge(state, patch) as RoomState
}
