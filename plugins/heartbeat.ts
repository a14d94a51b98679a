import fp from 'fastify-plugin'
import type { Connection, ConnectionRegistry } from './connections.js'

export interface HeartbeatOptions {
  /** Server ping frames every this many ms; a connection silent for 2 intervals is terminated [30000]. */
  intervalMs?: number
}

/**
 * Sends protocol ping frames and terminates peers that have been silent (no
 * message, no pong) for two intervals, which frees their slots and rooms.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined
  terminated = 0

  constructor (private readonly connections: ConnectionRegistry, readonly intervalMs: number) {}

  start (onSweep: (cleaned: number, alive: number) => void): void {
    this.timer = setInterval(() => onSweep(this.sweep(), this.connections.size), this.intervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  /** One pass: ping the live, terminate the silent; returns how many it terminated. */
  sweep (now = Date.now()): number {
    let cleaned = 0
    const deadline = now - 2 * this.intervalMs
    for (const conn of this.connections.all()) {
      if (conn.lastSeen < deadline) {
        conn.socket.terminate()
        cleaned++
      } else if (conn.open) {
        conn.socket.ping()
      }
    }
    this.terminated += cleaned
    return cleaned
  }

  /** Wires the activity a connection shows into its `lastSeen`. */
  watch (conn: Connection): void {
    conn.socket.on('pong', () => { conn.lastSeen = Date.now() })
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    heartbeat: Heartbeat
  }
}

export default fp<HeartbeatOptions>(async function heartbeat (app, opts) {
  const hb = new Heartbeat(app.connections, opts.intervalMs ?? 30000)
  app.decorate('heartbeat', hb)
  app.connections.onOpen(conn => hb.watch(conn))

  app.dispatcher.register('ping', {}, () => ({ type: 'pong', timestamp: new Date().toISOString() }))

  app.addHook('onReady', async () => {
    hb.start((cleaned, alive) => {
      if (cleaned > 0) app.log.info({ event: 'heartbeat.sweep', terminated: cleaned, alive }, 'terminated silent connections')
      else app.log.debug({ event: 'heartbeat.sweep', terminated: 0, alive }, 'heartbeat sweep')
    })
  })
  app.addHook('onClose', async () => hb.stop())
}, { name: 'heartbeat', fastify: '5.x', dependencies: ['connections', 'dispatcher'] })
