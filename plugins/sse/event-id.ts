import { ROOM_NAME_MAX_LENGTH, ROOM_NAME_PATTERN } from '../../protocol/limits.js'

/** Where a stream is in one room: the epoch its offsets count in ('' for a room never written) and the last offset delivered. */
export interface RoomPosition { epoch: string, offset: number }

/** Longest epoch an event id may carry (the stores write 16 hex digits). */
export const EPOCH_MAX_LENGTH = 64
/** Longest offset an event id may carry, in digits (a safe integer). */
const OFFSET_MAX_DIGITS = 15
/** Longest entry of an event id: a room name, an epoch, an offset and two colons. */
export const ENTRY_MAX_LENGTH = ROOM_NAME_MAX_LENGTH + EPOCH_MAX_LENGTH + OFFSET_MAX_DIGITS + 2

/** Longest event id for a stream of at most `maxRooms` rooms (entries and the commas between them). */
export function eventIdMaxLength (maxRooms: number): number {
  return Math.max(1, maxRooms) * (ENTRY_MAX_LENGTH + 1)
}

const roomPattern = new RegExp(ROOM_NAME_PATTERN)
const epochPattern = /^[A-Za-z0-9_-]*$/
const offsetPattern = /^(0|[1-9][0-9]*)$/

/** A refused event id: the message names the field and what is wrong. */
export class EventIdError extends Error {}

/**
 * An SSE event id: the position of the stream in each of its rooms, as
 * `room:epoch:offset` entries joined by commas, in the order of the `rooms`
 * list (room names have no comma; epochs and offsets no colon, so an entry
 * splits at its last two colons). Only header-safe characters, no base64:
 * an id stays readable in a log and short (about 30 bytes per room plus its
 * name). Clients treat it as opaque.
 */
export function formatEventId (positions: ReadonlyMap<string, RoomPosition>): string {
  let id = ''
  for (const [room, { epoch, offset }] of positions) id += (id === '' ? '' : ',') + room + ':' + epoch + ':' + offset
  return id
}

/**
 * Parses an event id (`Last-Event-ID` or `lastEventId`) back into positions,
 * refusing anything it could not have written: longer than `maxLength`, an
 * entry that is not `room:epoch:offset`, a room twice. `field` names the
 * input in the error.
 */
export function parseEventId (id: string, maxLength: number, field: string): Map<string, RoomPosition> {
  const positions = new Map<string, RoomPosition>()
  if (id === '') return positions
  if (id.length > maxLength) throw new EventIdError(`${field}: at most ${maxLength} characters (got ${id.length}); send the id of the last event received, unchanged`)
  for (const entry of id.split(',')) {
    const last = entry.lastIndexOf(':')
    const middle = last <= 0 ? -1 : entry.lastIndexOf(':', last - 1)
    if (middle <= 0) throw new EventIdError(`${field}: not an event id of this server (each entry is room:epoch:offset); send the id of the last event received, unchanged`)
    const room = entry.slice(0, middle)
    const epoch = entry.slice(middle + 1, last)
    const offset = entry.slice(last + 1)
    if (room.length > ROOM_NAME_MAX_LENGTH || !roomPattern.test(room)) throw new EventIdError(`${field}: the room name ${JSON.stringify(room.slice(0, 64))} is not a room name (1-${ROOM_NAME_MAX_LENGTH} of A-Z a-z 0-9 _ . : -)`)
    if (epoch.length > EPOCH_MAX_LENGTH || !epochPattern.test(epoch)) throw new EventIdError(`${field}: the epoch of room ${room} is not an epoch (at most ${EPOCH_MAX_LENGTH} of A-Z a-z 0-9 _ -)`)
    if (offset.length > OFFSET_MAX_DIGITS || !offsetPattern.test(offset)) throw new EventIdError(`${field}: the offset of room ${room} is not an offset (an integer of at most ${OFFSET_MAX_DIGITS} digits)`)
    if (positions.has(room)) throw new EventIdError(`${field}: room ${room} appears twice`)
    positions.set(room, { epoch, offset: Number(offset) })
  }
  return positions
}
