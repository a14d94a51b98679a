import { Type } from '@sinclair/typebox'
import {
  CLIENT_ID_MAX_LENGTH, CLIENT_ID_PATTERN, IDEMPOTENCY_KEY_MAX_LENGTH, MESSAGE_TEXT_MAX_LENGTH, REQUEST_ID_MAX_LENGTH, ROOM_NAME_MAX_LENGTH, ROOM_NAME_PATTERN
} from './limits.js'

/**
 * The TypeBox schemas of the fields the frames share, compiled once by the
 * dispatcher and the HTTP routes. Server-side: the client imports the static
 * types of ./frames.ts and ./limits.ts, never this module (TypeBox stays out
 * of the browser bundle).
 */
export const ClientId = Type.String({ minLength: 1, maxLength: CLIENT_ID_MAX_LENGTH, pattern: CLIENT_ID_PATTERN })
export const RoomName = Type.String({ minLength: 1, maxLength: ROOM_NAME_MAX_LENGTH, pattern: ROOM_NAME_PATTERN })
export const MessageText = Type.String({ minLength: 1, maxLength: MESSAGE_TEXT_MAX_LENGTH })
export const RequestId = Type.Union([Type.String({ maxLength: REQUEST_ID_MAX_LENGTH }), Type.Number()])
export const StatePatch = Type.Record(Type.String(), Type.Unknown())
export const Offset = Type.Integer({ minimum: 0 })
export const Version = Type.Integer({ minimum: 0 })
/** A write's idempotency key: 1-128 characters, chosen by the client, unique per client id within IDEMPOTENCY_TTL_MS. */
export const IdempotencyKey = Type.String({ minLength: 1, maxLength: IDEMPOTENCY_KEY_MAX_LENGTH })
/** A room's epoch: chosen at random when its history starts. */
export const Epoch = Type.String({ maxLength: 64 })
