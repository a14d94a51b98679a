import { RedisUnavailableError, type RedisLink } from '../core/redis.js'

/**
 * Where a frame of a channel sits in its channel's order: a stream of the
 * channel (`m` for a room's messages, `s` for its state versions) and its
 * number in that stream, which grows by one. Frames without one are unordered.
 */
export interface Sequence { stream: string, seq: number }

/** A frame of one of a namespace's channels, published on another instance. */
export type ChannelFrameHandler = (name: string, payload: string, except: string | undefined, sequence: Sequence | undefined) => void

/**
 * Frames to and from the other instances, by channel, in namespaces: each
 * protocol (native rooms, a Pusher app, Yjs documents) publishes and
 * subscribes in its own namespace and hears only its own channels. An
 * instance subscribes to a channel only while it has a local interest in it,
 * so an idle instance receives nothing. One node uses `LocalBroker`; with
 * REDIS_URL `RedisBroker`. Chosen once, by the cluster plugin.
 */
export interface Broker {
  readonly kind: 'local' | 'redis'
  /** The frames of `ns`'s channels from other instances go to `handler` (one handler per namespace). */
  handle (ns: string, handler: ChannelFrameHandler): void
  /** Once per local interest (reference-counted); resolves when frames published elsewhere reach this instance. */
  subscribe (ns: string, name: string): Promise<void>
  /** The local interest `subscribe` was for is over (or the subscribe failed). */
  unsubscribe (ns: string, name: string): void
  /**
   * Sends a frame to the other instances subscribed to the channel (every
   * frame published in one event-loop turn leaves in order). Resolves once
   * Redis took it; rejects with `unavailable` (503) when it cannot cross: a
   * caller that must not answer 2xx for a frame that did not reach the other
   * instances awaits it.
   */
  publish (ns: string, name: string, payload: string, except?: string, sequence?: Sequence): Promise<void>
  /** Channels subscribed here, as `<ns>:<name>` (status, tests). */
  readonly channels: string[]
  /** Frames received from other instances (status, tests). */
  readonly received: number
}

/** One instance: nobody to send to, nothing to receive. */
export class LocalBroker implements Broker {
  readonly kind = 'local'
  readonly channels: string[] = []
  readonly received = 0
  handle (): void {}
  async subscribe (): Promise<void> {}
  unsubscribe (): void {}
  async publish (): Promise<void> {}
}

/**
 * The Redis channel of a namespace's channel. Native rooms keep the channel
 * names of earlier versions (`sb:ch:room:<room>`), so instances of both
 * exchange room frames during a rolling upgrade.
 */
export function brokerChannel (prefix: string, ns: string, name: string, cluster = false): string {
  // on a Redis Cluster the channel's slot is its presence keys' (`{<ns>:<name>}`): one shard serves both
  return cluster ? `${prefix}ch:{${ns}:${name}}` : `${prefix}ch:${ns}:${name}`
}

interface Subscription { ns: string, name: string, count: number, subscribed: Promise<void> }
interface Outgoing { ns: string, name: string, parts: string[], done: Array<{ resolve: () => void, reject: (err: Error) => void }> }

interface Log {
  info: (o: object, m: string) => void
  warn: (o: object, m: string) => void
  debug: (o: object, m: string) => void
}

function unavailable (message: string): RedisUnavailableError {
  return new RedisUnavailableError(message)
}

/** The header line of one frame in a payload: the session to skip, and the frame's place in its stream. */
function header (except: string | undefined, sequence: Sequence | undefined): string {
  const skip = except ?? ''
  return sequence === undefined ? skip : `${skip} ${sequence.stream}:${sequence.seq}`
}

function parseHeader (line: string): [string | undefined, Sequence | undefined] {
  const space = line.indexOf(' ')
  if (space < 0) return [line === '' ? undefined : line, undefined]
  const skip = line.slice(0, space)
  const colon = line.indexOf(':', space)
  const seq = Number(line.slice(colon + 1))
  return [skip === '' ? undefined : skip, colon > 0 && Number.isSafeInteger(seq) ? { stream: line.slice(space + 1, colon), seq } : undefined]
}

/**
 * Redis pub/sub, one plain SUBSCRIBE per channel with a local interest. A
 * payload is "<origin serverId>\n<header>\n<frame>", repeated
 * "\n<header>\n<frame>" for the further frames of the same channel and
 * event-loop turn (a serialized JSON frame never holds a raw newline; binary
 * frames travel base64); a header is "<session id to skip or empty>" plus
 * " <stream>:<seq>" for an ordered frame. The origin skips its own frames
 * (it delivered them locally).
 */
export class RedisBroker implements Broker {
  readonly kind = 'redis'
  received = 0
  private readonly subscriptions = new Map<string, Subscription>()
  private readonly handlers = new Map<string, ChannelFrameHandler>()
  private readonly outbox = new Map<string, Outgoing>()
  private flushScheduled = false

  constructor (
    private readonly link: RedisLink,
    private readonly count: (direction: 'published' | 'received') => void,
    private readonly log: Log
  ) {
    link.onMessage((channel: string, payload: string) => this.onMessage(channel, payload))
    link.addRestorer({ prepare: () => this.resubscribe(), write: () => {} })
  }

  get channels (): string[] {
    return [...this.subscriptions.values()].map(s => `${s.ns}:${s.name}`)
  }

  handle (ns: string, handler: ChannelFrameHandler): void {
    if (this.handlers.has(ns)) throw new Error(`namespace ${ns} already has a handler`)
    this.handlers.set(ns, handler)
  }

  subscribe (ns: string, name: string): Promise<void> {
    const channel = brokerChannel(this.link.prefix, ns, name, this.link.cluster)
    const existing = this.subscriptions.get(channel)
    if (existing) {
      existing.count++
      return existing.subscribed
    }
    const sub: Subscription = { ns, name, count: 1, subscribed: this.subscribeNow(channel) }
    this.subscriptions.set(channel, sub)
    // a subscribe that fails gives its count back (its caller never unsubscribes)
    sub.subscribed.catch(() => {
      if (this.subscriptions.get(channel) === sub && --sub.count === 0) this.subscriptions.delete(channel)
    })
    return sub.subscribed
  }

  unsubscribe (ns: string, name: string): void {
    const channel = brokerChannel(this.link.prefix, ns, name, this.link.cluster)
    const sub = this.subscriptions.get(channel)
    if (!sub || --sub.count > 0) return
    this.subscriptions.delete(channel)
    if (!this.link.ready) return // nothing to undo: the restore subscribes only what is still counted
    this.link.unsubscribe(channel).catch(err => {
      this.log.debug({ event: 'bus.unsubscribe_failed', channel, reason: (err as Error).message }, 'unsubscribe failed')
    })
  }

  /**
   * The frames a channel gets within one event-loop turn leave as one PUBLISH
   * at the end of the turn, in order, and every channel's PUBLISH of that turn
   * in one write (ioredis auto-pipelining): under load a cross-instance
   * delivery costs Redis a fraction of a command.
   */
  publish (ns: string, name: string, payload: string, except?: string, sequence?: Sequence): Promise<void> {
    if (!this.link.ready) return Promise.reject(unavailable(`redis is ${this.link.status}: the frame cannot reach the other instances; retry later`))
    const channel = brokerChannel(this.link.prefix, ns, name, this.link.cluster)
    let out = this.outbox.get(channel)
    if (!out) this.outbox.set(channel, out = { ns, name, parts: [], done: [] })
    out.parts.push(header(except, sequence), payload)
    const sent = new Promise<void>((resolve, reject) => out.done.push({ resolve, reject }))
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(() => this.flush())
    }
    return sent
  }

  /** Sends what this turn queued, now (the cluster plugin flushes before this instance withdraws). */
  flush (): void {
    this.flushScheduled = false
    if (this.outbox.size === 0) return
    const batches = [...this.outbox]
    this.outbox.clear()
    for (const [channel, out] of batches) {
      if (!this.link.ready) {
        const err = unavailable(`redis is ${this.link.status}: the frame did not reach the other instances`)
        for (const d of out.done) d.reject(err)
        continue
      }
      this.count('published')
      this.link.publish(channel, `${this.link.serverId}\n${out.parts.join('\n')}`).then(() => {
        for (const d of out.done) d.resolve()
      }, err => {
        this.log.warn({ event: 'bus.publish_failed', ns: out.ns, channel: out.name, frames: out.parts.length / 2, reason: (err as Error).message }, 'frames did not reach the other instances')
        const failure = unavailable(`redis did not take the frame: ${(err as Error).message}`)
        for (const d of out.done) d.reject(failure)
      })
    }
  }

  private async subscribeNow (channel: string): Promise<void> {
    if (!this.link.ready) throw unavailable(`redis is ${this.link.status}; retry later`)
    try {
      await this.link.subscribe(channel)
    } catch (err) {
      throw unavailable(`redis refused the subscription: ${(err as Error).message}`)
    }
  }

  private onMessage (channel: string, payload: string): void {
    const sub = this.subscriptions.get(channel)
    if (sub === undefined) return
    const handler = this.handlers.get(sub.ns)
    if (handler === undefined) return
    const first = payload.indexOf('\n')
    if (first < 0 || payload.slice(0, first) === this.link.serverId) return
    this.count('received')
    this.received++
    // one or more "<header>\n<frame>" pairs, in the order they were published
    let at = first + 1
    for (;;) {
      const lineEnd = payload.indexOf('\n', at)
      if (lineEnd < 0) break
      const [except, sequence] = parseHeader(payload.slice(at, lineEnd))
      const end = payload.indexOf('\n', lineEnd + 1)
      const frame = end < 0 ? payload.slice(lineEnd + 1) : payload.slice(lineEnd + 1, end)
      handler(sub.name, frame, except, sequence)
      if (end < 0) break
      at = end + 1
    }
  }

  /** Redis is (back) up: every channel still counted is subscribed again. */
  private async resubscribe (): Promise<void> {
    const channels = [...this.subscriptions.keys()]
    if (channels.length === 0) return
    const subscribed = this.link.subscribe(...channels)
    for (const sub of this.subscriptions.values()) {
      sub.subscribed = subscribed.catch(err => { throw unavailable(`redis refused the subscription: ${(err as Error).message}`) })
      sub.subscribed.catch(() => {})
    }
    await subscribed
    this.log.info({ event: 'bus.restored', channels: channels.length }, 'subscriptions restored')
  }
}
