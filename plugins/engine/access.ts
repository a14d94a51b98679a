import type { Principal } from '../core/identity.js'

/** Roles of the operator's API: `admin` may act, `admin-readonly` may only look. */
export const ADMIN_ROLE = 'admin'
export const ADMIN_READONLY_ROLE = 'admin-readonly'
/** A backend's role: may publish and send as anyone. */
export const SERVICE_ROLE = 'service'

/** What a principal may do with a room or a document: write (and read), read only, or nothing. */
export type Access = 'write' | 'read' | null

/** What a caller asks to do in a room or a document. */
export type RoomAction = 'join' | 'read' | 'publish' | 'update' | 'exec'

/** The actions that change a room or a document. */
const WRITES: ReadonlySet<RoomAction> = new Set(['publish', 'update', 'exec'])

/** The prefix that makes a `rooms` claim entry read-only. */
export const READ_ONLY_PREFIX = 'read:'

/** One entry of the `rooms` claim, parsed: the names it covers and whether it gives read-only access. */
export interface RoomPattern {
  /** An exact name, or the prefix of a `prefix*` entry (`*` alone: every name). */
  readonly name: string
  readonly prefix: boolean
  readonly readOnly: boolean
}

/**
 * The one grammar of the `rooms` claim, for rooms and documents and every
 * door alike: an entry is an exact name, or a prefix ending in `*` (`*` alone
 * is every name); written `read:<entry>` it gives read-only access. The
 * widest entry that covers a name wins (a write entry beats a read one).
 */
export function parseRoomsClaim (rooms: readonly string[]): RoomPattern[] {
  return rooms.map(entry => {
    const readOnly = entry.startsWith(READ_ONLY_PREFIX)
    const pattern = readOnly ? entry.slice(READ_ONLY_PREFIX.length) : entry
    const prefix = pattern.endsWith('*')
    return { name: prefix ? pattern.slice(0, -1) : pattern, prefix, readOnly }
  })
}

function covers (pattern: RoomPattern, name: string): boolean {
  return pattern.prefix ? name.startsWith(pattern.name) : name === pattern.name
}

/** Whether a principal may act as an operator (either admin role). */
export function isAdmin (principal: Principal | null | undefined): boolean {
  return principal?.role === ADMIN_ROLE || principal?.role === ADMIN_READONLY_ROLE
}

/**
 * What `principal` may do with the room or document `name`. Open mode (no
 * principal) and a token without a `rooms` claim: everything. The read-only
 * operator role never writes, whatever its claim.
 */
export function accessTo (principal: Principal | null | undefined, name: string): Access {
  if (!principal) return 'write'
  let access: Access = principal.rooms === undefined ? 'write' : null
  if (principal.rooms !== undefined) {
    for (const pattern of parseRoomsClaim(principal.rooms)) {
      if (!covers(pattern, name)) continue
      if (!pattern.readOnly) {
        access = 'write'
        break
      }
      access = 'read'
    }
  }
  if (access === 'write' && !mayWrite(principal)) return 'read'
  return access
}

/** Whether the principal may change anything at all (the read-only operator may not). */
export function mayWrite (principal: Principal | null | undefined): boolean {
  return principal?.role !== ADMIN_READONLY_ROLE
}

/** Whether `action` is allowed with `access`: reads need any access, writes need write access. */
export function allows (access: Access, action: RoomAction): boolean {
  if (access === null) return false
  return access === 'write' || !WRITES.has(action)
}

/**
 * Whether the principal may send a direct message as `from`: only as itself,
 * unless it is a backend (`service`) or the operator; never the read-only operator.
 */
export function maySendAs (principal: Principal | null | undefined, from: string): boolean {
  if (!principal) return true
  if (!mayWrite(principal)) return false
  return principal.role === SERVICE_ROLE || principal.role === ADMIN_ROLE || principal.sub === from
}

/**
 * The rooms a principal may see, as the patterns of its claim (read-only ones
 * included), for listings; null = every room.
 */
export function visibleRooms (principal: Principal | null | undefined): RoomPattern[] | null {
  if (!principal?.rooms) return null
  return parseRoomsClaim(principal.rooms)
}
