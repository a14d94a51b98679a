import fp from 'fastify-plugin'

export interface MessageRateOptions {
  /** The rate is averaged over this many one-second slots [5]. */
  windowSeconds?: number
}

/**
 * Frames in and out per second, every protocol's, over the last few seconds. The hot
 * path only increments integers; a one-second timer turns them into rates.
 */
export class MessageRate {
  private readonly inSlots: number[]
  private readonly outSlots: number[]
  private slot = 0
  private filled = 0
  private lastIn = 0
  private lastOut = 0

  constructor (private readonly readFramesIn: () => number, private readonly readFramesOut: () => number, readonly windowSeconds = 5) {
    this.inSlots = new Array<number>(windowSeconds).fill(0)
    this.outSlots = new Array<number>(windowSeconds).fill(0)
  }

  /** Closes the current one-second slot (called every second). */
  tick (): void {
    const out = this.readFramesOut()
    const received = this.readFramesIn()
    this.inSlots[this.slot] = received - this.lastIn
    this.outSlots[this.slot] = out - this.lastOut
    this.lastIn = received
    this.lastOut = out
    this.slot = (this.slot + 1) % this.windowSeconds
    this.filled = Math.min(this.windowSeconds, this.filled + 1)
  }

  report (): { inPerSecond: number, outPerSecond: number, windowSeconds: number } {
    const avg = (slots: number[]) => this.filled === 0 ? 0 : Math.round((slots.reduce((a, b) => a + b, 0) / this.filled) * 10) / 10
    return { inPerSecond: avg(this.inSlots), outPerSecond: avg(this.outSlots), windowSeconds: this.windowSeconds }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    messageRate: MessageRate
  }
}

/** Adds `messages: { inPerSecond, outPerSecond }` to /api/status. */
export default fp<MessageRateOptions>(async function messageRate (app, opts) {
  const traffic = app.sessions.traffic
  const rate = new MessageRate(() => traffic.framesIn, () => traffic.framesOut, opts.windowSeconds ?? 5)
  app.decorate('messageRate', rate)
  app.statusReport.section('messages', () => rate.report())

  let timer: NodeJS.Timeout | undefined
  app.addHook('onReady', async () => {
    timer = setInterval(() => rate.tick(), 1000)
    timer.unref()
  })
  app.addHook('onClose', async () => clearInterval(timer))
}, { name: 'message-rate', fastify: '5.x', dependencies: ['sessions', 'status'] })
