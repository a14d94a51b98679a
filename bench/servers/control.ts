/**
 * The few words a benchmark server speaks with the runner over IPC: it says
 * where it listens, and on request collects garbage and reports its memory.
 */
declare const gc: (() => void) | undefined

export interface ServerMemory { rss: number, heapUsed: number, heapTotal: number, external: number, arrayBuffers: number }

export function announce (port: number, close: () => Promise<void>): void {
  process.on('message', (m: { type?: string }) => {
    if (m?.type !== 'gc') return
    if (typeof gc === 'function') { gc(); gc() }
    const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage()
    process.send?.({ type: 'memory', memory: { rss, heapUsed, heapTotal, external, arrayBuffers } satisfies ServerMemory })
  })
  // the runner going away ends the server, whatever happened to it
  process.once('disconnect', () => { close().finally(() => process.exit(0)) })
  process.send?.({ type: 'ready', port })
}
