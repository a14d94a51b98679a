/**
 * Core pinning for the benchmarks: the server on core 0, the load generator
 * on core 1, so they never share a core (taskset, Linux; nothing elsewhere).
 */
import { execFileSync } from 'node:child_process'
import { cpus } from 'node:os'

function hasTaskset (): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** Whether processes are pinned: two cores or more and `taskset` on PATH. */
export const pinning = cpus().length >= 2 && hasTaskset()

/** Pins every thread of a process to one core. */
export function pin (pid: number, core: number): void {
  if (!pinning) return
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' })
  } catch {}
}
