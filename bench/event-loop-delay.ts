/**
 * A preload that records a process's event-loop delay from start to exit and
 * appends one JSON line to EVENT_LOOP_DELAY_OUT (default
 * ./event-loop-delay.jsonl): the script, pid, seconds, and the delay's
 * p50 / p99 / max / mean in ms. For the benchmark servers:
 *   BENCH_SERVER_NODE_ARGS="--import ./dist/bench/event-loop-delay.js" npm run bench -- --only S3,S4
 * One line per server process, so per scenario and server (every rate step
 * of it together). It answers "is the event loop blocked", which CPU per
 * delivery does not: a synchronous fsync costs little CPU but stalls the loop.
 */
import { appendFileSync } from 'node:fs'
import { basename } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'

const histogram = monitorEventLoopDelay({ resolution: 5 })
histogram.enable()
const started = Date.now()
const ms = (ns: number): number => Math.round(ns / 1e4) / 100

process.on('exit', () => {
  histogram.disable()
  const line = {
    script: basename(process.argv[1] ?? ''),
    pid: process.pid,
    seconds: (Date.now() - started) / 1000,
    p50: ms(histogram.percentile(50)),
    p99: ms(histogram.percentile(99)),
    max: ms(histogram.max),
    mean: ms(histogram.mean)
  }
  appendFileSync(process.env.EVENT_LOOP_DELAY_OUT ?? 'event-loop-delay.jsonl', JSON.stringify(line) + '\n')
})
