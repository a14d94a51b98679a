import fp from 'fastify-plugin'

/** A direct message as it is delivered (`type: 'message'`) and as it waits in an inbox. */
export interface DirectMessage {
  type: 'message'
  messageId: string
  from: string
  to: string
  text: string
  timestamp: string
}

/** Messages for offline clients. Durable implementations replace the memory one. */
export interface InboxStore {
  push (clientId: string, message: DirectMessage): Promise<void>
  /** Removes and returns the client's unexpired messages, oldest first. */
  drain (clientId: string): Promise<DirectMessage[]>
  /** Drops expired messages everywhere; returns how many. */
  expire (now?: number): Promise<number>
}

export interface InboxOptions {
  /** Messages kept per offline client; the oldest go first [100]. 0 disables queueing. */
  max?: number
  /** How long a queued message waits before it is dropped [86400000]. */
  ttlMs?: number
}

export class MemoryInbox implements InboxStore {
  private readonly boxes = new Map<string, DirectMessage[]>()
  constructor (private readonly max: number, private readonly ttlMs: number) {}

  async push (clientId: string, message: DirectMessage): Promise<void> {
    if (this.max === 0) return
    let box = this.boxes.get(clientId)
    if (!box) {
      box = []
      this.boxes.set(clientId, box)
    }
    box.push(message)
    if (box.length > this.max) box.splice(0, box.length - this.max)
  }

  async drain (clientId: string): Promise<DirectMessage[]> {
    const box = this.boxes.get(clientId)
    if (!box) return []
    this.boxes.delete(clientId)
    const oldest = Date.now() - this.ttlMs
    return box.filter(m => Date.parse(m.timestamp) >= oldest)
  }

  async expire (now = Date.now()): Promise<number> {
    const oldest = now - this.ttlMs
    let dropped = 0
    for (const [clientId, box] of this.boxes) {
      const kept = box.filter(m => Date.parse(m.timestamp) >= oldest)
      dropped += box.length - kept.length
      if (kept.length === 0) this.boxes.delete(clientId)
      else if (kept.length !== box.length) this.boxes.set(clientId, kept)
    }
    return dropped
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    inbox: InboxStore
  }
}

export default fp<InboxOptions>(async function inbox (app, opts) {
  const store = new MemoryInbox(opts.max ?? 100, opts.ttlMs ?? 86400000)
  app.decorate('inbox', store)
  const timer = setInterval(() => {
    store.expire().then(dropped => {
      if (dropped > 0) app.log.info({ event: 'inbox.expired', dropped }, 'expired queued direct messages')
    }, err => app.log.error({ event: 'inbox.expire_failed', err }, 'inbox expiry failed'))
  }, Math.min(opts.ttlMs ?? 86400000, 60000)).unref()
  app.addHook('onClose', async () => clearInterval(timer))
}, { name: 'inbox', fastify: '5.x' })
