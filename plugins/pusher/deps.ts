// Every import of the Pusher plugin from the rest of the project goes through
// this one file: the public plugin of each lower layer, never its internals.
export { ConfigError, errorBody, type Config } from '../core/index.js'
export { closeCodeLabel } from '../core/index.js'
export type { Broker, Presence, JoinOutcome } from '../cluster/index.js'
export { textFrame, jsonDepth, tooDeepField, WebhookSender, type Session, type SessionProtocol, type CloseReason, type WebhookOutbox } from '../engine/index.js'
export { ROOM_NAME_MAX_LENGTH, ROOM_NAME_PATTERN } from '../../protocol/index.js'
export type { LastEventStore } from '../store/index.js'
