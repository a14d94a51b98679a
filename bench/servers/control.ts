/**
 * The few words a benchmark server speaks with the runner over IPC: it says
 * where it listens, on request collects garbage and reports its memory, and
 * (S8) reports how many broker (Redis pub/sub) messages it has received.
 */
declare const gc: (() => void) | undefined

export interface ServerMemory { rss: number, heapUsed: number, heapTotal: number, external: number, arrayBuffers: number }

/** Broker traffic of one instance: pub/sub messages it received and published; null where the server has no broker. */
export interface ServerStats { pubsubMessages: number | null, pubsubPublished: number | null }

export function announce (port: number, close: () => Promise<void>, stats: () => ServerStats | Promise<ServerStats> = () => ({ pubsubMessages: null, pubsubPublished: null })): void {
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'stats') {
      Promise.resolve(stats()).then(
        s => process.send?.({ type: 'stats', stats: s }),
        err => process.send?.({ type: 'failed', error: String((err as Error)?.message ?? err) })
      )
      return
    }
    if (m?.type !== 'gc') return
    if (typeof gc === 'function') { gc(); gc() }
    const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage()
    process.send?.({ type: 'memory', memory: { rss, heapUsed, heapTotal, external, arrayBuffers } satisfies ServerMemory })
  })
  // the runner going away ends the server, whatever happened to it
  process.once('disconnect', () => { close().finally(() => process.exit(0)) })
  process.send?.({ type: 'ready', port })
}
