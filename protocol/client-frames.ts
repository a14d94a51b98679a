import { Type, type TObject, type TProperties } from '@sinclair/typebox'
import { RPC_METHOD_MAX_LENGTH, RPC_METHOD_PATTERN } from './limits.js'
import { ClientId, Epoch, IdempotencyKey, MessageText, Offset, RequestId, RoomName, StatePatch, Version } from './schemas.js'

/**
 * The TypeBox schemas of every frame a client sends: the fields of each type
 * (what a feature registers with the dispatcher) and `clientFrame`, the
 * envelope the dispatcher adds (`type` and an optional request `id`).
 * Server-side like ./schemas.ts (TypeBox); the client takes the static types
 * of ./frames.ts.
 */

/** A client frame's schema: its fields plus `type` and the optional request `id` (fields first, so errors name them first). */
export function clientFrame (type: string, fields: TProperties): TObject {
  const envelope: TProperties = { ...fields, type: Type.Literal(type), id: Type.Optional(RequestId) }
  return Type.Object(envelope)
}

/** `ping`: no fields; answered with `pong`. */
export const PingFields = {}
/** Every write frame may carry one: a repeat from the same client id gets the first reply (see docs/protocol.md). */
const idempotencyKey = Type.Optional(IdempotencyKey)
/** `send`: a direct message to every connection of `to`. */
export const SendFields = { to: ClientId, text: MessageText, idempotencyKey }
/** `join`: `since` is the last offset seen, to recover what was missed; `epoch` the room's epoch it counted in. */
export const JoinFields = { room: RoomName, since: Type.Optional(Offset), epoch: Type.Optional(Epoch) }
export const LeaveFields = { room: RoomName }
export const PublishFields = { room: RoomName, data: Type.Unknown(), idempotencyKey }
/** `update`: an RFC 7396 merge patch, optionally only at `baseVersion`. */
export const UpdateFields = { room: RoomName, patch: StatePatch, baseVersion: Type.Optional(Version), idempotencyKey }
/** `refresh`: a fresh token for this connection (same `sub`); answered `ack` with its expiry. */
export const RefreshFields = { token: Type.String({ minLength: 1, maxLength: 8192 }) }
/** `rpc`: a call of the application's backend (PROXY_RPC_URL), answered `rpc_result` with its `data`. */
export const RpcFields = { method: Type.String({ minLength: 1, maxLength: RPC_METHOD_MAX_LENGTH, pattern: RPC_METHOD_PATTERN }), data: Type.Optional(Type.Unknown()) }
/** `code`'s longest length when not configured, in characters. */
export const EXEC_CODE_MAX_LENGTH = 16384
/** `exec`: `code` up to `maxCodeLength` characters (configurable, hence a function). */
export function execFields (maxCodeLength = EXEC_CODE_MAX_LENGTH) {
  return { room: RoomName, code: Type.String({ minLength: 1, maxLength: maxCodeLength }), idempotencyKey }
}

/** Every built-in client frame's fields, by type (`exec` at its default limit). */
export const CLIENT_FRAMES: Record<string, TProperties> = {
  ping: PingFields,
  send: SendFields,
  join: JoinFields,
  leave: LeaveFields,
  publish: PublishFields,
  update: UpdateFields,
  refresh: RefreshFields,
  rpc: RpcFields,
  exec: execFields()
}
