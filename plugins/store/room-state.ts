import { randomBytes } from 'node:crypto'
import { StoreUnavailableError } from '../core/errors.js'
import { applyMergePatch } from '../../protocol/merge-patch.js'
import { StateTooLargeError, type RoomMessage, type RoomSnapshot, type RoomSnapshotWithHistory, type RoomState } from './interface.js'

/** What both stores decide the same way about a room's state and history, written once. */

/** A new room history's epoch: 64 random bits in hex. */
export function newEpoch (): string {
  return randomBytes(8).toString('hex')
}

/** A stored state as JSON; a state that does not parse makes the room unavailable, never empty. */
export function parseState (room: string, json: string): RoomState {
  try {
    return JSON.parse(json) as RoomState
  } catch (err) {
    throw new StoreUnavailableError(`the stored state of room ${room} is unreadable: ${(err as Error).message}`)
  }
}

/** The state after a merge patch and its JSON, or StateTooLargeError past `maxBytes` (InvalidPatchError for a bad patch). */
export function patchedState (room: string, state: RoomState, patch: RoomState, maxBytes: number): { state: RoomState, json: string } {
  const next = applyMergePatch(state, patch)
  const json = JSON.stringify(next)
  const bytes = Buffer.byteLength(json)
  if (bytes > maxBytes) throw new StateTooLargeError(room, bytes, maxBytes)
  return { state: next, json }
}

/**
 * The recovery window of a join with `since`: the messages after it that the
 * store still holds (`messagesAfter(from)`), and whether they are all of them.
 */
export function recoveryWindow (snapshot: RoomSnapshot, since: number, messagesAfter: (from: number) => RoomMessage[]): RoomSnapshotWithHistory {
  // a client ahead of the store (say, after a restore) gets the whole history
  const from = since > snapshot.offset ? 0 : since
  const missed = messagesAfter(from)
  const complete = since <= snapshot.offset && (since === snapshot.offset || missed[0]?.offset === since + 1)
  return { ...snapshot, missed, complete }
}
