import { Type, type TObject } from '@sinclair/typebox'
import type { ErrorCode } from './errors.js'
import { RequestId } from './schemas.js'

/**
 * The TypeBox schemas of every frame the server sends, by message name (`ack`
 * has one shape per request). Open objects: a client must ignore fields it
 * does not know. The AsyncAPI document publishes them and
 * test/asyncapi.test.ts checks a live session's frames against them.
 * Server-side like ./schemas.ts (TypeBox); the client takes the static types
 * of ./frames.ts.
 */

const Open = { additionalProperties: true }
const Timestamp = Type.String({ format: 'date-time', description: 'ISO 8601 UTC with milliseconds' })
const Id = Type.Optional({ ...RequestId, description: 'the `id` of the request this answers' } as typeof RequestId)
const Room = Type.String({ description: 'room name' })
export const RoomMessageFrame = Type.Object({
  type: Type.Literal('room_message'),
  room: Room,
  offset: Type.Integer({ minimum: 1, description: 'per room, grows by 1 per message' }),
  messageId: Type.String(),
  from: Type.String({ description: 'client id of the sender (`server` for an HTTP publish without `from`)' }),
  data: Type.Unknown({ description: 'any JSON value, as published' }),
  timestamp: Timestamp,
  epoch: Type.String({ description: 'the room\'s epoch: offsets count within it' })
}, Open)

/** Every error code a WebSocket client can get, with what it means (a missing or unknown code fails to compile). */
export const ERROR_CODES: Record<ErrorCode, string> = {
  invalid_message: 'the frame is not JSON, not an object, or a field breaks its schema; the message names the field and the limit',
  unknown_type: '`type` names no registered message type; `knownTypes` lists them',
  not_in_room: '`publish`, `update`, `exec` or `leave` for a room the connection has not joined',
  room_limit: 'the connection is already in `limit` rooms (MAX_ROOMS_PER_CONNECTION)',
  rate_limited: 'more than WS_MESSAGES_PER_SECOND messages per second (burst 2x); sustained flooding closes with 1008',
  version_conflict: '`baseVersion` is not the room\'s version; `currentVersion` says which it is',
  forbidden: 'the token\'s `rooms` claim does not allow this room, or a backend hook refused (`hook` names it, `reason` is its code)',
  code_execution_disabled: '`exec` on a server without ENABLE_CODE_EXECUTION',
  exec_timeout: 'the code ran longer than EXEC_TIMEOUT_MS',
  exec_failed: 'the code threw or ran out of memory (EXEC_MEMORY_MB)',
  state_too_large: 'the state after the patch would exceed ROOM_STATE_MAX_BYTES; `bytes` and `maxBytes` say by how much',
  unavailable: 'the store could not load or commit, or a backend hook (PROXY_*_URL) failed (`hook` names it); nothing changed, retry later',
  internal_error: 'an unexpected server failure; nothing is known to have changed',
  idempotency_conflict: '`idempotencyKey` was already used by this client id, within IDEMPOTENCY_TTL_MS, for a request with another body; nothing was applied',
  idempotency_in_progress: 'HTTP only: a request with this `Idempotency-Key` is still being handled; retry after it finished (409)',
  unauthorized: 'a token the server refuses: a `refresh` (the connection keeps its current token; `reason` names the cause as a word), or over HTTP (401) auth mode and no valid token (missing, malformed, expired, wrong signature, issuer, audience, algorithm, unknown key)'
}

export const WelcomeFrame = Type.Object({
  type: Type.Literal('welcome'),
  clientId: Type.String({ description: 'the token\'s sub, the clientId query parameter, or a generated `anon-` id' }),
  connectionId: Type.String(),
  serverId: Type.String({ description: 'the instance that holds this connection' }),
  timestamp: Timestamp,
  heartbeatIntervalMs: Type.Integer({ description: 'server pings this often; silent for 2 intervals = terminated' }),
  limits: Type.Object({
    maxPayload: Type.Integer({ description: 'bytes per frame (WS_MAX_PAYLOAD); larger closes with 1009' }),
    messagesPerSecond: Type.Integer({ description: 'sustained frames per second (WS_MESSAGES_PER_SECOND)' }),
    messageBurst: Type.Integer({ description: 'frames in a burst (2x the rate)' }),
    maxRoomsPerConnection: Type.Integer({ description: 'MAX_ROOMS_PER_CONNECTION' }),
    roomHistorySize: Type.Integer({ description: 'messages kept per room (ROOM_HISTORY_SIZE)' }),
    roomStateMaxBytes: Type.Integer({ description: 'a room state\'s JSON size (ROOM_STATE_MAX_BYTES)' }),
    textMaxLength: Type.Integer({ description: 'characters of a direct message\'s `text`' }),
    roomNameMaxLength: Type.Integer(),
    roomNamePattern: Type.String(),
    clientIdMaxLength: Type.Integer(),
    clientIdPattern: Type.String(),
    execCodeMaxLength: Type.Integer({ description: 'characters of an `exec` message\'s `code`' }),
    requestIdMaxLength: Type.Integer({ description: 'characters of a string `id`' }),
    idempotencyKeyMaxLength: Type.Integer({ description: 'characters of an `idempotencyKey`' }),
    idempotencyTtlMs: Type.Integer({ description: 'how long a key is remembered (IDEMPOTENCY_TTL_MS)' }),
    idempotencyMaxKeys: Type.Integer({ description: 'keys remembered per client id (IDEMPOTENCY_MAX_KEYS); the oldest go first' })
  }, Open),
  tokenExpiresAt: Type.Optional(Type.String({ format: 'date-time', description: 'when the connection\'s token expires (its `exp`): send `refresh` before, or it is closed with 1008' })),
  data: Type.Optional(Type.Unknown({ description: 'what the application\'s connect hook (PROXY_CONNECT_URL) gave this connection' }))
}, Open)
export const PongFrame = Type.Object({ type: Type.Literal('pong'), timestamp: Timestamp, id: Id }, Open)
const Duplicate = Type.Optional(Type.Literal(true, { description: 'a repeat of an `idempotencyKey`: nothing was applied again, this is the original reply' }))
export const AckSendFrame = Type.Object({ type: Type.Literal('ack'), messageId: Type.String(), delivered: Type.Integer({ minimum: 0 }), queued: Type.Boolean(), duplicate: Duplicate, id: Id }, Open)
export const AckPublishFrame = Type.Object({ type: Type.Literal('ack'), room: Room, offset: Type.Integer({ minimum: 1 }), messageId: Type.String(), duplicate: Duplicate, id: Id }, Open)
export const AckUpdateFrame = Type.Object({ type: Type.Literal('ack'), room: Room, version: Type.Integer({ minimum: 1 }), duplicate: Duplicate, id: Id }, Open)
export const AckExecFrame = Type.Object({ type: Type.Literal('ack'), room: Room, duplicate: Duplicate, id: Id }, Open)
export const MessageFrame = Type.Object({ type: Type.Literal('message'), messageId: Type.String(), from: Type.String(), to: Type.String(), text: Type.String(), timestamp: Timestamp }, Open)
export const JoinedFrame = Type.Object({
  type: Type.Literal('joined'),
  room: Room,
  state: Type.Record(Type.String(), Type.Unknown(), { description: 'the room\'s JSON state' }),
  version: Type.Integer({ minimum: 0 }),
  offset: Type.Integer({ minimum: 0 }),
  members: Type.Array(Type.String(), { description: 'client ids, each once' }),
  missed: Type.Array(RoomMessageFrame, { description: 'messages after `since`, oldest first' }),
  recovered: Type.Boolean({ description: 'true when `missed` is complete' }),
  epoch: Type.String({ description: 'the room\'s epoch; empty for a room never written' }),
  reason: Type.Optional(Type.Literal('epoch_changed', { description: 'with `recovered: false`: `since` counted in another epoch (the store was replaced); `missed` starts at the new history' })),
  data: Type.Optional(Type.Unknown({ description: 'what the application\'s join hook (PROXY_JOIN_URL) gave this client for the room' })),
  id: Id
}, Open)
export const RpcResultFrame = Type.Object({
  type: Type.Literal('rpc_result'),
  data: Type.Unknown({ description: 'the application backend\'s answer (PROXY_RPC_URL); null when it gave none' }),
  id: Id
}, Open)
export const LeftFrame = Type.Object({
  type: Type.Literal('left'),
  room: Room,
  reason: Type.Optional(Type.Literal('token_refreshed', { description: 'without `id`: the server left the room for the client, because its refreshed token no longer allows it' })),
  id: Id
}, Open)
export const AckRefreshFrame = Type.Object({
  type: Type.Literal('ack'),
  expiresAt: Type.Union([Timestamp, Type.Null()], { description: 'when the new token expires; null: it has no `exp`' }),
  id: Id
}, Open)
export const TokenExpiringFrame = Type.Object({
  type: Type.Literal('token_expiring'),
  expiresAt: Timestamp,
  inMs: Type.Integer({ minimum: 0, description: 'milliseconds left when it was sent' })
}, Open)
export const PresenceFrame = Type.Object({ type: Type.Literal('presence'), room: Room, event: Type.Union([Type.Literal('join'), Type.Literal('leave')]), clientId: Type.String() }, Open)
export const StateFrame = Type.Object({ type: Type.Literal('state'), room: Room, version: Type.Integer({ minimum: 1 }), patch: Type.Record(Type.String(), Type.Unknown()), from: Type.String() }, Open)
export const ExecResultFrame = Type.Object({
  type: Type.Literal('exec_result'),
  room: Room,
  from: Type.String(),
  ok: Type.Boolean(),
  result: Type.Unknown({ description: 'the completion value as JSON; null on failure' }),
  logs: Type.Array(Type.String(), { description: 'what console.log printed' }),
  error: Type.Union([Type.Null(), Type.Object({ code: Type.String(), message: Type.String() }, Open)]),
  durationMs: Type.Number({ minimum: 0 })
}, Open)
export const ErrorFrame = Type.Object({
  type: Type.Literal('error'),
  code: Type.Union(Object.keys(ERROR_CODES).map(c => Type.Literal(c)), { description: Object.entries(ERROR_CODES).map(([c, d]) => `${c}: ${d}`).join('\n') }),
  message: Type.String({ description: 'for people: names the field and the limit' }),
  id: Id
}, Open)
export const ServerShutdownFrame = Type.Object({ type: Type.Literal('server_shutdown'), reason: Type.String(), reconnectAfterMs: Type.Integer({ minimum: 0 }), timestamp: Timestamp }, Open)
export const DisconnectedFrame = Type.Object({ type: Type.Literal('disconnected'), reason: Type.String(), timestamp: Timestamp }, Open)
export const HistoryClearedFrame = Type.Object({ type: Type.Literal('history_cleared'), room: Room, offset: Type.Integer({ minimum: 0 }), by: Type.String(), timestamp: Timestamp }, Open)

/** Every frame the server sends, by message name (`type` is in each payload; `ack` has one shape per request). */
export const SERVER_FRAMES: Record<string, { summary: string, payload: TObject }> = {
  welcome: { summary: 'First frame of every connection: who you are and the limits you can hit; queued direct messages follow', payload: WelcomeFrame },
  pong: { summary: 'Reply to ping', payload: PongFrame },
  ackSend: { summary: 'Reply to send: committed; `delivered` connections reached, `queued` for an offline recipient', payload: AckSendFrame },
  ackPublish: { summary: 'Reply to publish, after the commit (and after the sender\'s own room_message)', payload: AckPublishFrame },
  ackUpdate: { summary: 'Reply to update, after the commit', payload: AckUpdateFrame },
  ackExec: { summary: 'Reply to exec: accepted; members get exec_result', payload: AckExecFrame },
  message: { summary: 'A direct message, to every connection of `to`', payload: MessageFrame },
  joined: { summary: 'Reply to join: a snapshot of the room and what was missed since `since`', payload: JoinedFrame },
  rpc_result: { summary: 'Reply to rpc: the application backend\'s answer', payload: RpcResultFrame },
  left: { summary: 'Reply to leave; or, without `id` and with `reason: "token_refreshed"`, a room the refreshed token no longer allows', payload: LeftFrame },
  ackRefresh: { summary: 'Reply to refresh: the new token replaced the old one; the connection now expires at `expiresAt`', payload: AckRefreshFrame },
  token_expiring: { summary: 'The connection\'s token expires soon (AUTH_EXPIRY_NOTICE_MS before): send `refresh` with a fresh one, or it is closed with 1008 at `expiresAt`', payload: TokenExpiringFrame },
  presence: { summary: 'To the other members: a client\'s first connection joined, or its last one left', payload: PresenceFrame },
  room_message: { summary: 'A published message, to every member (sender included)', payload: RoomMessageFrame },
  state: { summary: 'A state change, to every member: the patch as sent', payload: StateFrame },
  exec_result: { summary: 'The outcome of an exec, to every member', payload: ExecResultFrame },
  error: { summary: 'A refused request; the connection stays open', payload: ErrorFrame },
  server_shutdown: { summary: 'The server is stopping: reconnect after `reconnectAfterMs`; a close 1001 follows', payload: ServerShutdownFrame },
  disconnected: { summary: 'An operator disconnected this connection: a close 4001 follows; do not reconnect on your own', payload: DisconnectedFrame },
  history_cleared: { summary: 'An operator cleared the room\'s history: messages up to `offset` are gone; later ones keep their offsets', payload: HistoryClearedFrame }
}

/** The `type` values the server sends (for checks against docs/protocol.md). */
export function serverMessageTypes (): string[] {
  return [...new Set(Object.values(SERVER_FRAMES).map(m => m.payload.properties.type.const as string))]
}
