import { randomUUID } from 'node:crypto'
import { RedisUnavailableError, type RedisLink } from '../core/redis.js'

/** Answers a request of one kind on this instance (a JSON body in, a JSON body out). */
export type RequestHandler = (body: unknown) => Promise<unknown> | unknown

/** One instance's answer to a gathered request. */
export interface InstanceAnswer<T = unknown> {
  serverId: string
  /** The handler's result; absent when it failed or the instance did not answer in time. */
  result?: T
  /** Why there is no result: the handler's error, or `timeout`. */
  error?: string
}

/**
 * Asks every live instance (this one included) the same question and collects
 * the answers: the operator's views and actions across a cluster (the admin
 * plugin lists connections and disconnects clients through it). One node uses
 * `LocalRequests`; with REDIS_URL `RedisRequests`. Handlers are registered
 * once by the plugin that owns the kind.
 */
export interface ClusterRequests {
  handle (kind: string, fn: RequestHandler): void
  /** Every live instance's answer (this one's first), or a timeout entry for an instance that did not answer. */
  gather<T = unknown> (kind: string, body: unknown, timeoutMs?: number): Promise<Array<InstanceAnswer<T>>>
}

async function answer (handlers: Map<string, RequestHandler>, kind: string, body: unknown): Promise<{ result?: unknown, error?: string }> {
  const fn = handlers.get(kind)
  if (!fn) return { error: `no handler for ${kind}` }
  try {
    return { result: await fn(body) }
  } catch (err) {
    return { error: (err as Error).message }
  }
}

/** One instance: the question is answered here. */
export class LocalRequests implements ClusterRequests {
  private readonly handlers = new Map<string, RequestHandler>()
  constructor (private readonly serverId: string) {}

  handle (kind: string, fn: RequestHandler): void {
    this.handlers.set(kind, fn)
  }

  async gather<T> (kind: string, body: unknown): Promise<Array<InstanceAnswer<T>>> {
    return [{ serverId: this.serverId, ...await answer(this.handlers, kind, body) } as InstanceAnswer<T>]
  }
}

const requestChannel = (prefix: string) => `${prefix}ch:request`
const replyChannel = (prefix: string, serverId: string) => `${prefix}ch:reply:${serverId}`

interface Pending { answers: InstanceAnswer[], expected: number, done: () => void }

interface Log { warn: (o: object, m: string) => void }

/**
 * Scatter-gather over Redis pub/sub: a request is published on one channel
 * every instance subscribes to; PUBLISH returns how many instances received
 * it, so the asker waits for exactly that many replies on its own reply
 * channel (or the timeout). Payloads are JSON: `{id, kind, from, body}` and
 * `{id, serverId, result | error}`.
 */
export class RedisRequests implements ClusterRequests {
  private readonly handlers = new Map<string, RequestHandler>()
  private readonly pending = new Map<string, Pending>()
  private readonly mine: string
  private readonly requests: string

  constructor (private readonly link: RedisLink, private readonly log: Log) {
    this.mine = replyChannel(link.prefix, link.serverId)
    this.requests = requestChannel(link.prefix)
    link.onMessage((channel: string, payload: string) => {
      if (channel === this.requests) this.onRequest(payload)
      else if (channel === this.mine) this.onReply(payload)
    })
    // subscribed again whenever Redis is back (before the restore's transaction)
    link.addRestorer({ prepare: async () => { await link.subscribe(this.requests, this.mine) }, write: () => {} })
  }

  handle (kind: string, fn: RequestHandler): void {
    this.handlers.set(kind, fn)
  }

  async gather<T> (kind: string, body: unknown, timeoutMs = 2000): Promise<Array<InstanceAnswer<T>>> {
    if (!this.link.ready) throw new RedisUnavailableError(`redis is ${this.link.status}; the other instances cannot be asked; retry later`)
    const id = randomUUID()
    const entry: Pending = { answers: [], expected: Infinity, done: () => {} }
    const finished = new Promise<void>(resolve => { entry.done = resolve })
    this.pending.set(id, entry)
    try {
      const receivers = await this.link.publish(this.requests, JSON.stringify({ id, kind, from: this.link.serverId, body }))
      entry.expected = receivers
      if (entry.answers.length >= receivers) entry.done()
      let timer: NodeJS.Timeout | undefined
      await Promise.race([finished, new Promise<void>(resolve => { timer = setTimeout(resolve, timeoutMs) })])
      clearTimeout(timer)
      const answers = entry.answers.slice()
      if (answers.length < receivers) {
        this.log.warn({ event: 'cluster.request_timeout', kind, expected: receivers, answered: answers.length }, 'some instances did not answer a cluster request in time')
        answers.push({ serverId: 'unknown', error: `timeout: ${receivers - answers.length} instance(s) did not answer within ${timeoutMs} ms` })
      }
      // this instance first, then by server id: a stable order for pagination
      return answers.sort((a, b) => a.serverId === this.link.serverId ? -1 : b.serverId === this.link.serverId ? 1 : a.serverId < b.serverId ? -1 : 1) as Array<InstanceAnswer<T>>
    } catch (err) {
      if (err instanceof RedisUnavailableError) throw err
      throw new RedisUnavailableError(`redis did not take the cluster request: ${(err as Error).message}`)
    } finally {
      this.pending.delete(id)
    }
  }

  private onRequest (payload: string): void {
    let request: { id: string, kind: string, from: string, body: unknown }
    try {
      request = JSON.parse(payload)
    } catch {
      return
    }
    if (typeof request?.id !== 'string' || typeof request.from !== 'string' || typeof request.kind !== 'string') return
    answer(this.handlers, request.kind, request.body).then(reply => {
      const out = JSON.stringify({ id: request.id, serverId: this.link.serverId, ...reply })
      return this.link.publish(replyChannel(this.link.prefix, request.from), out)
    }).catch(err => {
      this.log.warn({ event: 'cluster.reply_failed', kind: request.kind, reason: (err as Error).message }, 'could not answer a cluster request')
    })
  }

  private onReply (payload: string): void {
    let reply: InstanceAnswer & { id: string }
    try {
      reply = JSON.parse(payload)
    } catch {
      return
    }
    const entry = this.pending.get(reply?.id)
    if (!entry) return
    const { id: _id, ...rest } = reply
    entry.answers.push(rest)
    if (entry.answers.length >= entry.expected) entry.done()
  }
}
