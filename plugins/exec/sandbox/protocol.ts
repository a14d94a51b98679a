/** Messages between the host (runner.ts) and the sandbox worker (worker.ts). */

export interface RunRequest {
  id: number
  code: string
  timeoutMs: number
  memoryBytes: number
}

import type { ExecError } from '../../../protocol/frames.js'

/** `exec_timeout` when the time limit stopped the code, otherwise `exec_failed`: the wire's `exec_result.error`. */
export type RunError = ExecError

export interface RunOutcome {
  ok: boolean
  /** The completion value of the code, as JSON; null for undefined or on failure. */
  result: unknown
  /** What console.log (and info/warn/error/debug) printed, one entry per call. */
  logs: string[]
  error: RunError | null
  durationMs: number
}

export type WorkerReply =
  | { ready: true }
  | { id: number, outcome: RunOutcome, fatal?: boolean }
