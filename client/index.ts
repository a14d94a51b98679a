import { SwitchboardClient, type ClientOptions } from './client.js'

export { SwitchboardClient } from './client.js'
export type { ClientOptions, ClientEvents, ReconnectOptions, WebSocketLike, WebSocketConstructor, TransportName } from './client.js'
export { Room } from './room.js'
export type { RoomEvents, StateEvent, PresenceEvent, GapEvent, RecoveredEvent } from './room.js'
export { SwitchboardError } from '../protocol/frames.js'
export type {
  Welcome, DirectMessage, RoomMessage, StateChange, Presence, ExecResult, Joined,
  ServerShutdown, SendAck, PublishAck, UpdateAck, JsonObject, RequestId, ExecError, TokenExpiring, RefreshAck, RpcResult
} from '../protocol/frames.js'
export { backoffCeiling, backoffDelay, shutdownDelay, defaultBackoff } from './backoff.js'
export type { BackoffOptions } from './backoff.js'
export { applyMergePatch } from '../protocol/merge-patch.js'

/** Creates a client and resolves once it is connected. */
export async function connect (options: ClientOptions): Promise<SwitchboardClient> {
  const client = new SwitchboardClient(options)
  await client.connect()
  return client
}
