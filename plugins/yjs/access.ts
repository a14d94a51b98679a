import type { Principal } from './deps.js'

/** Document names: what a room name may be, plus `/` (y-websocket puts the name in the path unencoded). */
export const DOC_NAME = /^[A-Za-z0-9_.:@/-]{1,128}$/

export type Access = 'write' | 'read' | null

function matches (patterns: readonly string[], name: string): boolean {
  return patterns.some(p => p.endsWith('*') ? name.startsWith(p.slice(0, -1)) : name === p)
}

/**
 * What a token may do with a document, from its `rooms` claim (the same
 * patterns as rooms: exact names or prefixes ending in `*`): a pattern gives
 * read-write access, a pattern written `read:<pattern>` read-only access. No
 * principal (open mode) or no claim: read-write everywhere.
 */
export function documentAccess (principal: Principal | null | undefined, name: string): Access {
  const rooms = principal?.rooms
  if (!rooms) return 'write'
  if (matches(rooms.filter(r => !r.startsWith('read:')), name)) return 'write'
  if (matches(rooms.filter(r => r.startsWith('read:')).map(r => r.slice(5)), name)) return 'read'
  return null
}
