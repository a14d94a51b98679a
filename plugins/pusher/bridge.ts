import type { PusherApp } from './apps.js'
import { isEncrypted, isPresence, isPrivate, USER_CHANNEL_PREFIX } from './channels/registry.js'
import { CHANNEL_NAME } from './ws-protocol.js'
import { ROOM_NAME_MAX_LENGTH, ROOM_NAME_PATTERN } from './deps.js'

/**
 * The bridge between native rooms and an app's Pusher channels (docs/pusher.md,
 * "Native rooms and Pusher channels"). An app with `bridgeRoomPrefix` P maps its
 * channel C to the native room P + C, when:
 * - C is public (or a public `cache-` channel); private- and presence- channels
 *   only with `bridgePrivate` (the native side is then authorized by the token's
 *   `rooms` claim alone, as for any room);
 * - C is not `private-encrypted-`: the server cannot read its ciphertext, and
 *   a native client could neither decrypt nor encrypt;
 * - C is not a `#server-to-user-` channel;
 * - P + C is a valid room name (Pusher's `= @ , ;` are not room characters;
 *   at most 128 characters).
 */
const ROOM_NAME = new RegExp(ROOM_NAME_PATTERN)

/** Who bridged a message, so that the other direction does not send it back. */
export const BRIDGE_ORIGIN = 'pusher-bridge'

/** The native room a channel is bridged to, if it is. */
export function bridgedRoom (app: PusherApp, channel: string): string | undefined {
  const prefix = app.bridgeRoomPrefix
  if (prefix === undefined || channel.startsWith(USER_CHANNEL_PREFIX) || isEncrypted(channel)) return undefined
  if ((isPrivate(channel) || isPresence(channel)) && !app.bridgePrivate) return undefined
  const room = prefix + channel
  if (room.length > ROOM_NAME_MAX_LENGTH || !ROOM_NAME.test(room)) return undefined
  return room
}

/** The channel a native room is bridged to, if it is. */
export function bridgedChannel (app: PusherApp, room: string): string | undefined {
  const prefix = app.bridgeRoomPrefix
  if (prefix === undefined || !room.startsWith(prefix)) return undefined
  const channel = room.slice(prefix.length)
  if (channel.length > app.maxChannelNameLength || !CHANNEL_NAME.test(channel) || bridgedRoom(app, channel) !== room) return undefined
  return channel
}

/** Event names a native publish may give its Pusher event (the protocol's own are reserved). */
function isEventName (name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name.length <= 200 && !name.startsWith('pusher:') && !name.startsWith('pusher_internal:')
}

/**
 * A native room message as a Pusher event: data `{"event": E, "data": D}` is
 * event E with data D (a string as is, anything else as JSON), as a Pusher
 * backend would trigger it; any other data is event `room_message` with data
 * `{"from","offset","messageId","timestamp","data"}`.
 */
export function toPusherEvent (message: { from: string, offset: number, messageId: string, timestamp: string, data: unknown }): { event: string, data: string } {
  const d = message.data as { event?: unknown, data?: unknown } | null
  if (d !== null && typeof d === 'object' && !Array.isArray(d) && isEventName(d.event) && Object.keys(d).every(k => k === 'event' || k === 'data')) {
    return { event: d.event, data: typeof d.data === 'string' ? d.data : JSON.stringify(d.data ?? null) }
  }
  const { from, offset, messageId, timestamp, data } = message
  return { event: 'room_message', data: JSON.stringify({ from, offset, messageId, timestamp, data }) }
}

/**
 * A Pusher event as the data of a native room message: `{"event", "data"}`,
 * data parsed from JSON when it is JSON (as pusher-js hands it to a handler),
 * plus `user_id` for a client event on a presence channel.
 */
export function toRoomData (event: string, data: string, userId?: string | number): Record<string, unknown> {
  let value: unknown = data
  try {
    value = JSON.parse(data)
  } catch {}
  return { event, data: value, ...(userId === undefined ? {} : { user_id: userId }) }
}
