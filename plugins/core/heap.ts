import { setFlagsFromString } from 'node:v8'

/**
 * V8's allocation-site pretenuring, switched off for the standalone server.
 *
 * V8 marks an allocation site "tenured" when nearly everything it allocated
 * survived a scavenge, and from then on allocates straight into the old
 * generation. Sites of the hot path (a frame's objects, a write's closure) are
 * marked while the server starts and clients join, when everything survives;
 * later the same sites allocate only short-lived objects, which then fill the
 * old generation: S3 in docs/benchmarks.md ran a major GC every ~2 s at 6,000
 * publishes/s, each a 40-50 ms stall on a one-core host, and failed p99 at
 * 6,000-8,000/s. Without pretenuring: 2 major GCs in the same run, p99 7 ms at
 * 8,000/s, the same CPU per delivery.
 *
 * Imported first by server.ts (ES modules run their imports in order, so this
 * runs before any other module is evaluated). A process started with
 * `--allocation-site-pretenuring` on its command line keeps V8's default.
 * Embedders that register the plugins in their own process decide for
 * themselves (`node --no-allocation-site-pretenuring`).
 */
export function disablePretenuring (execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some(arg => /^--(no-)?allocation[-_]site[-_]pretenuring$/.test(arg))) return false
  setFlagsFromString('--no-allocation-site-pretenuring')
  return true
}

disablePretenuring()
