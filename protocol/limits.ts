/** Limits of the wire that do not depend on configuration (configured ones are in `welcome.limits`). */

/** Client ids: 1-64 characters of [A-Za-z0-9_.:@-], as the contract names clients (and a token's `sub`). */
export const CLIENT_ID_PATTERN = '^[A-Za-z0-9_.:@-]+$'
export const CLIENT_ID_MAX_LENGTH = 64
/** Room names: 1-128 characters of [A-Za-z0-9_.:-]. */
export const ROOM_NAME_PATTERN = '^[A-Za-z0-9_.:-]+$'
export const ROOM_NAME_MAX_LENGTH = 128
/** A direct message's `text`, in characters. */
export const MESSAGE_TEXT_MAX_LENGTH = 32768
/** A request's `id` when it is a string. */
export const REQUEST_ID_MAX_LENGTH = 128
/** A write's `idempotencyKey` (and the HTTP `Idempotency-Key` header), in characters. */
export const IDEMPOTENCY_KEY_MAX_LENGTH = 128

/** An `rpc` frame's `method`: 1-128 characters of [A-Za-z0-9_.:/-]. */
export const RPC_METHOD_PATTERN = '^[A-Za-z0-9_.:/-]+$'
export const RPC_METHOD_MAX_LENGTH = 128
/** An `rpc` frame's `data`, in bytes of JSON. */
export const RPC_DATA_MAX_BYTES = 65536

/** The error text for a value nested past the limit, naming the field. */
export function depthMessage (field: string, limit: number): string {
  return `${field}: nesting deeper than ${limit} levels (limit ${limit})`
}
