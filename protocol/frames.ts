/** Wire types of the Switchboard protocol (see docs/protocol.md and /docs/asyncapi.json). */

export type RequestId = string | number
export type JsonObject = Record<string, unknown>

export interface Welcome {
  type: 'welcome'
  clientId: string
  connectionId: string
  serverId: string
  timestamp: string
  heartbeatIntervalMs: number
  limits: {
    maxPayload?: number
    messagesPerSecond?: number
    maxRoomsPerConnection?: number
    roomHistorySize?: number
    roomStateMaxBytes?: number
    messageBurst?: number
    textMaxLength?: number
    roomNameMaxLength?: number
    roomNamePattern?: string
    clientIdMaxLength?: number
    clientIdPattern?: string
    execCodeMaxLength?: number
    requestIdMaxLength?: number
    jsonMaxDepth?: number
    idempotencyKeyMaxLength?: number
    idempotencyTtlMs?: number
    idempotencyMaxKeys?: number
    [limit: string]: number | string | undefined
  }
  /** When the connection's token expires (ISO 8601); absent without one or without `exp`. */
  tokenExpiresAt?: string
  /** What the application's connect hook gave this connection (PROXY_CONNECT_URL). */
  data?: unknown
}

/** The token expires soon: refresh it (the client does with `getToken`). */
export interface TokenExpiring {
  type: 'token_expiring'
  expiresAt: string
  inMs: number
}

/** Reply to `refresh`. */
export interface RefreshAck {
  type: 'ack'
  expiresAt: string | null
}

/** Reply to `rpc`: the application backend's answer (PROXY_RPC_URL). */
export interface RpcResult<T = unknown> {
  type: 'rpc_result'
  data: T
  id?: RequestId
}

export interface DirectMessage {
  type: 'message'
  messageId: string
  from: string
  to: string
  text: string
  timestamp: string
}

export interface RoomMessage<T = unknown> {
  type: 'room_message'
  room: string
  offset: number
  messageId: string
  from: string
  data: T
  timestamp: string
  /** The room's epoch: offsets count within it. */
  epoch: string
}

export interface StateChange {
  type: 'state'
  room: string
  version: number
  patch: JsonObject
  from: string
}

export interface Presence {
  type: 'presence'
  room: string
  event: 'join' | 'leave'
  clientId: string
}

export interface ExecError {
  code: 'exec_timeout' | 'exec_failed'
  message: string
}

export interface ExecResult {
  type: 'exec_result'
  room: string
  from: string
  ok: boolean
  result: unknown
  logs: string[]
  /** Why the run failed (`exec_timeout` or `exec_failed`, and the message); null when `ok`. */
  error: ExecError | null
  durationMs: number
}

export interface Joined<T = unknown> {
  type: 'joined'
  room: string
  state: JsonObject
  version: number
  offset: number
  members: string[]
  missed: Array<RoomMessage<T>>
  recovered: boolean
  /** The room's epoch; empty for a room never written. */
  epoch: string
  /** With `recovered: false`: `epoch_changed` when `since` counted in another epoch. */
  reason?: 'epoch_changed'
  /** What the application's join hook gave this client for the room (PROXY_JOIN_URL). */
  data?: unknown
}

export interface ServerShutdown {
  type: 'server_shutdown'
  reason: string
  reconnectAfterMs: number
  timestamp: string
}

/** An operator disconnected this connection; a close 4001 with the same reason follows. Do not reconnect on your own. */
export interface Disconnected {
  type: 'disconnected'
  reason: string
  timestamp: string
}

/** An operator cleared a room's history: messages up to `offset` are gone; later ones keep their offsets. */
export interface HistoryCleared {
  type: 'history_cleared'
  room: string
  offset: number
  by: string
  timestamp: string
}

export interface ServerError {
  type: 'error'
  code: string
  message: string
  id?: RequestId
  [field: string]: unknown
}

/** `duplicate: true`: the reply to an earlier request with the same `idempotencyKey` (nothing was applied again). */
export interface SendAck { messageId: string, delivered: number, queued: boolean, duplicate?: true }
export interface PublishAck { room: string, offset: number, messageId: string, duplicate?: true }
export interface UpdateAck { room: string, version: number, duplicate?: true }

/**
 * Every failure the client reports. `code` is the server's error code
 * (`not_in_room`, `version_conflict`, ...) or one of the client's own:
 * `request_timeout`, `queue_full`, `outcome_unknown` (a write whose
 * idempotency key expired before it could be resent), `disconnected`,
 * `client_closed`, `connect_failed`.
 */
export class SwitchboardError extends Error {
  readonly code: string
  /** Extra fields the server sent with the error, if any. */
  readonly details: JsonObject

  constructor (code: string, message: string, details: JsonObject = {}) {
    super(message)
    this.name = 'SwitchboardError'
    this.code = code
    this.details = details
  }
}
