import fp from 'fastify-plugin'
import type { Session, SessionRegistry } from './sessions.js'

export interface HeartbeatOptions {
  /** Server ping frames every this many ms; a connection silent for 2 intervals is terminated [30000]. */
  intervalMs?: number
}

/** Slices per interval: each tick pings this fraction of the connections. */
const SLICES = 20

/**
 * Sends protocol ping frames and terminates peers that have been silent (no
 * message, no pong) for two intervals, which frees their slots and rooms.
 * The pings of one interval are spread over it in slices: pinging 10,000
 * sockets at once would stall the event loop for every other message.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined
  private round: IterableIterator<Session> | null = null
  private roundCleaned = 0
  terminated = 0

  constructor (private readonly connections: SessionRegistry, readonly intervalMs: number) {}

  /** Runs one slice per tick; `onSweep` hears about each completed round (one interval). */
  start (onSweep: (cleaned: number, alive: number) => void): void {
    this.timer = setInterval(() => {
      const done = this.slice(Math.ceil(this.connections.size / SLICES))
      if (done) {
        onSweep(this.roundCleaned, this.connections.size)
        this.roundCleaned = 0
      }
    }, Math.max(1, Math.floor(this.intervalMs / SLICES)))
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  /** One whole pass at once: ping the live, terminate the silent; returns how many it terminated. */
  sweep (now = Date.now()): number {
    let cleaned = 0
    for (const conn of this.connections.all()) if (this.visit(conn, now)) cleaned++
    this.terminated += cleaned
    return cleaned
  }

  /** Visits the next `count` connections of the current round; true when the round is over. */
  private slice (count: number, now = Date.now()): boolean {
    // a live iterator: connections opened during the round are visited in it, closed ones skipped
    this.round ??= this.connections.all()
    for (let i = 0; i < count; i++) {
      const next = this.round.next()
      if (next.done === true) {
        this.round = null
        return true
      }
      if (this.visit(next.value, now)) {
        this.roundCleaned++
        this.terminated++
      }
    }
    return false
  }

  /** Pings a live connection or terminates a silent one (true). */
  private visit (conn: Session, now: number): boolean {
    if (conn.lastSeen < now - 2 * this.intervalMs) {
      conn.socket.terminate()
      return true
    }
    if (conn.open) conn.socket.ping()
    return false
  }

  /** Wires the activity a connection shows into its `lastSeen`. */
  watch (conn: Session): void {
    conn.socket.on('pong', () => { conn.lastSeen = Date.now() })
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    heartbeat: Heartbeat
  }
}

export default fp<HeartbeatOptions>(async function heartbeat (app, opts) {
  const hb = new Heartbeat(app.sessions, opts.intervalMs ?? 30000)
  app.decorate('heartbeat', hb)
  app.sessions.onOpen(conn => hb.watch(conn))

  app.addHook('onReady', async () => {
    hb.start((cleaned, alive) => {
      if (cleaned > 0) app.log.info({ event: 'heartbeat.sweep', terminated: cleaned, alive }, 'terminated silent connections')
      else app.log.debug({ event: 'heartbeat.sweep', terminated: 0, alive }, 'heartbeat sweep')
    })
  })
  app.addHook('onClose', async () => hb.stop())
}, { name: 'heartbeat', fastify: '5.x', dependencies: ['sessions'] })
