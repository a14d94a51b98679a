/**
 * CPU time of a benchmarked process, read from outside.
 */
import { readdirSync, readFileSync } from 'node:fs'
import pidusage from 'pidusage'

/**
 * CPU time of a process in ms, summed over its threads from
 * /proc/<pid>/task/<tid>/schedstat (nanoseconds on the CPU): unlike utime and
 * stime it does not move in 10 ms ticks, so a small share (a Redis shard over
 * a second, a tiny smoke run) is still measured. 0 when unreadable (not Linux, process gone).
 */
export function preciseCpuMs (pid: number): number {
  try {
    let ns = 0
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try { ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) } catch {}
    }
    return ns / 1e6
  } catch {
    return 0
  }
}

/** CPU time of a process in ms: precise where /proc has schedstat (Linux), else pidusage's (ticks). Compare two readings of one process. */
export async function cpuMs (pid: number): Promise<number> {
  const precise = preciseCpuMs(pid)
  return precise > 0 ? precise : (await pidusage(pid)).ctime
}
