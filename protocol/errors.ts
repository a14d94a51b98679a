/** The error codes of the wire contract (plus `internal_error` for the unexpected). */
export type ErrorCode =
  | 'invalid_message' | 'unknown_type' | 'not_in_room' | 'room_limit' | 'rate_limited'
  | 'version_conflict' | 'forbidden' | 'code_execution_disabled' | 'exec_timeout'
  | 'exec_failed' | 'state_too_large' | 'unavailable' | 'internal_error'
  | 'idempotency_conflict' | 'idempotency_in_progress' | 'unauthorized'

/**
 * The HTTP status (and its reason phrase) each code answers with when an HTTP
 * route meets it; a code added to ErrorCode without a line here fails to compile.
 */
export const ERROR_STATUS: Record<ErrorCode, readonly [number, string]> = {
  invalid_message: [400, 'Bad Request'],
  unknown_type: [400, 'Bad Request'],
  not_in_room: [409, 'Conflict'],
  room_limit: [429, 'Too Many Requests'],
  rate_limited: [429, 'Too Many Requests'],
  version_conflict: [409, 'Conflict'],
  forbidden: [403, 'Forbidden'],
  code_execution_disabled: [403, 'Forbidden'],
  exec_timeout: [408, 'Request Timeout'],
  exec_failed: [422, 'Unprocessable Entity'],
  state_too_large: [413, 'Payload Too Large'],
  unavailable: [503, 'Service Unavailable'],
  internal_error: [500, 'Internal Server Error'],
  // as the IETF httpapi idempotency-key draft answers them
  idempotency_conflict: [422, 'Unprocessable Entity'],
  idempotency_in_progress: [409, 'Conflict'],
  unauthorized: [401, 'Unauthorized']
}

/** Thrown by a handler (WebSocket or HTTP) to answer the request with a contract error. */
export class WsError extends Error {
  constructor (readonly code: ErrorCode, message: string, readonly extra?: Record<string, unknown>) {
    super(message)
  }
}
