import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
// types only: ioredis and @fastify/redis load when Redis is configured (below), not on every start
import type {} from '@fastify/redis'
import type { Cluster, Redis, ChainableCommander, ClusterOptions, RedisOptions } from 'ioredis'

export interface RedisPluginOptions {
  /** redis:// or rediss:// URL; when absent (and no `sentinel`) the plugin only reports `disabled`. With `sentinel`, only its credentials, db and TLS are used. */
  url?: string
  /** Redis is the master these Sentinels name (REDIS_SENTINELS, REDIS_SENTINEL_NAME); ioredis follows its failovers. */
  sentinel?: { sentinels: Array<{ host: string, port: number }>, name: string }
  /** Redis is a Redis Cluster reached through these seed nodes (REDIS_CLUSTER_NODES): keys hash-tagged, sharded pub/sub. */
  cluster?: Array<{ host: string, port: number }>
  /** Connect and per-command timeout [5000]. */
  timeoutMs?: number
  /** How long this instance's heartbeat key lives; slots and presence of a crashed instance free up after it [15000]. */
  instanceTtlMs?: number
  /** What every key and channel of this deployment starts with (REDIS_KEY_PREFIX) ['sb:']. */
  keyPrefix?: string
}

export type RedisStatus = 'disabled' | 'ready' | 'connecting' | 'down'

/** What every key and channel starts with unless REDIS_KEY_PREFIX says otherwise. */
export const DEFAULT_KEY_PREFIX = 'sb:'

/** The key that says an instance is alive; it expires unless the instance refreshes it. */
export function instanceKey (prefix: string, serverId: string): string {
  return `${prefix}instance:${serverId}`
}

/**
 * How many times another instance finished sweeping `serverId` (short-lived):
 * an instance that comes back while a peer sweeps it (its heartbeat expired
 * during a stall or an outage) sees the count move on its next beat and
 * writes its entries again, so a sweep that overlapped its restore costs one
 * beat, never its entries for good.
 */
export function sweptKey (prefix: string, serverId: string): string {
  return `${prefix}swept:${serverId}`
}

/**
 * The dead-instance sweep every script over a per-instance hash shares
 * (connection slots, client connections), prepended to each:
 * `sweepDead(key, me, prefix, serverOf, includeMe)` returns the entries
 * {field, value, server} of live instances (their key `prefix .. server`
 * exists; this instance `me` only when `includeMe`) and deletes the fields of
 * dead ones, whose field names it returns second.
 *
 * On a Redis Cluster a script may touch only the keys it declares, all in one
 * slot, so it cannot look at other instances' heartbeat keys: there every
 * entry counts, and the instance that claims a crashed one removes that
 * instance's fields through the indexes it kept (`RedisLink.onInstanceGone`).
 */
export function sweepDeadInstances (cluster: boolean): string {
  const alive = cluster ? 'true' : "redis.call('EXISTS', prefix .. server) == 1"
  return `
local function sweepDead (key, me, prefix, serverOf, includeMe)
  local live, gone = {}, {}
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local field, value = fields[i], fields[i + 1]
    local server = serverOf(field)
    if server == me then
      if includeMe then table.insert(live, {field, value, server}) end
    elseif ${alive} then
      table.insert(live, {field, value, server})
    else
      redis.call('HDEL', key, field)
      table.insert(gone, field)
    end
  end
  return live, gone
end
`
}

/** The sweep of a single Redis (or Sentinel): a crashed instance's fields go when its heartbeat key has expired. */
export const SWEEP_DEAD_INSTANCES = sweepDeadInstances(false)

/**
 * A key's hash tag on a Redis Cluster (`{kind:id}`: every key of one room,
 * client or instance lands on one slot, so one script can hold them all; the
 * kind keeps the tag from being empty), the plain id on one Redis (the key
 * names of earlier versions, so stored data stays where it is).
 */
export function hashTag (cluster: boolean, kind: string, id: string): string {
  return cluster ? `{${kind}:${id}}` : id
}

/** Thrown when a request needs Redis and Redis is not reachable: answered as `unavailable` / 503. */
export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError'
  readonly statusCode = 503
  readonly code = 'unavailable'
}

/** Options both connections share: fail fast while disconnected, reconnect with backoff forever. */
export function connectionOptions (timeoutMs: number, name: string): RedisOptions {
  return {
    connectionName: name,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    // no offline queue: a command while disconnected is refused at once, so callers answer `unavailable` instead of hanging
    enableOfflineQueue: false,
    // a command in flight when the link drops is failed, never resent: a resent append could apply twice
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // the bus restores its own subscriptions from its reference counts
    autoResubscribe: false,
    enableAutoPipelining: true,
    retryStrategy: (attempt: number) => Math.min(2000, 50 * 2 ** Math.min(attempt, 6)) + Math.floor(Math.random() * 100)
  }
}

/**
 * What a plugin keeps in Redis for this instance, rewritten whenever Redis is
 * back (or lost this instance's heartbeat): `prepare` runs first (subscribe),
 * then `write` adds its entries to the one transaction that rewrites the
 * heartbeat key first, so another instance sees either both or neither.
 */
export interface Restorer {
  prepare?: () => Promise<void>
  write: (tx: ChainableCommander) => void
  /** After the transaction: `ok` false when it failed (what `write` took must be kept for the next one). */
  written?: (ok: boolean) => void
}

/** A crashed instance's leftovers in one plugin's keys, removed by the instance that claimed it (Redis Cluster). */
export type GoneSweeper = (serverId: string) => Promise<void>

/**
 * A batch of writes on a Redis Cluster, where a MULTI cannot span slots: each
 * command goes to its own shard (all in flight at once); `exec` rejects when
 * any failed, so what they stood for is written again next time.
 */
function replayBatch (commands: Redis): ChainableCommander {
  const calls: Array<[string, unknown[]]> = []
  const batch: ChainableCommander = new Proxy({} as ChainableCommander, {
    get (_, name) {
      if (name === 'then') return undefined
      if (name === 'exec') {
        return async () => {
          const client = commands as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>
          const results = await Promise.allSettled(calls.map(([command, args]) => client[command](...args)))
          const failed = results.find(r => r.status === 'rejected')
          if (failed) throw (failed as PromiseRejectedResult).reason
          return results.map(r => [null, (r as PromiseFulfilledResult<unknown>).value])
        }
      }
      return (...args: unknown[]) => {
        calls.push([String(name), args])
        return batch
      }
    }
  })
  return batch
}

/**
 * The two connections (commands and subscriber) and what the rest of the app
 * needs to know about them: whether Redis is usable, this instance's heartbeat.
 * On a Redis Cluster both are ioredis `Cluster`s (typed as `Redis`: the
 * commands used here are the same), channels are sharded (SPUBLISH and
 * SSUBSCRIBE: a frame reaches only the shard that owns its channel's slot, and
 * ioredis keeps one subscriber connection per shard, subscribed again after a
 * failover or a resharding), and writes that span slots go as a batch, not a MULTI.
 */
export class RedisLink {
  private everReady = false
  private heartbeat: NodeJS.Timeout | undefined
  /** Called each time both connections are ready again after a loss (and the first time). */
  private readonly readyListeners: Array<() => void> = []
  private readonly restorers: Restorer[] = []
  private readonly beatListeners: Array<() => void> = []
  private readonly goneSweepers: GoneSweeper[] = []
  private restoring: Promise<void> | null = null
  private restoreAgain = false
  private restoreRetry: NodeJS.Timeout | undefined
  private wasReady = false
  /** The swept count (`sweptKey`) read before the last restore that succeeded; undefined until one has. */
  private sweptSeen: string | null | undefined = undefined
  /** Why the last restore failed, while this instance is not registered. */
  private restoreError: string | undefined
  /**
   * Whether this instance's heartbeat and entries are written since Redis was
   * last (re)connected: false until a restore succeeds, and after one fails.
   * While false, peers cannot see this instance's clients and members.
   */
  registered = false
  /** Set at shutdown, so quitting is not reported as an outage. */
  closing = false

  constructor (
    readonly commands: Redis,
    readonly subscriber: Redis,
    readonly serverId: string,
    readonly instanceTtlMs: number,
    /** What every key and channel of this deployment starts with: several deployments share one Redis without seeing each other. */
    readonly prefix: string,
    private readonly log: { info: (o: object, m: string) => void, warn: (o: object, m: string) => void, error: (o: object, m: string) => void },
    /** Redis is a Redis Cluster (REDIS_CLUSTER_NODES). */
    readonly cluster = false
  ) {
    for (const [role, client] of [['commands', commands], ['subscriber', subscriber]] as const) {
      client.on('ready', () => this.changed(role, 'ready'))
      client.on('close', () => this.changed(role, 'close'))
      // without a listener ioredis logs every failed reconnect to stderr; the status says it once
      client.on('error', (err: Error) => log.warn({ event: 'redis.error', role, reason: err.message }, 'redis connection error'))
      // ioredis gives up (status `end`) when a Sentinel-resolved connect is cut short: start again rather than stay down for good
      client.on('end', () => {
        if (this.closing) return
        log.warn({ event: 'redis.reconnect_after_end', role }, 'the redis client stopped reconnecting; starting it again')
        setTimeout(() => { if (!this.closing) client.connect().catch(() => {}) }, 1000).unref()
      })
    }
  }

  get status (): Exclude<RedisStatus, 'disabled'> {
    if (this.commands.status === 'ready' && this.subscriber.status === 'ready') return 'ready'
    return this.everReady ? 'down' : 'connecting'
  }

  get ready (): boolean {
    return this.status === 'ready'
  }

  /** Throws RedisUnavailableError unless both connections are up. */
  requireReady (): void {
    if (!this.ready) throw new RedisUnavailableError(`redis is ${this.status}; retry later`)
  }

  onReady (fn: () => void): void {
    this.readyListeners.push(fn)
  }

  /** Publishes on a channel (sharded on a cluster); resolves with how many subscribers got it (on a cluster: of that shard, which is all of them). */
  publish (channel: string, payload: string): Promise<number> {
    return this.cluster ? this.commands.spublish(channel, payload) as Promise<number> : this.commands.publish(channel, payload)
  }

  /** Subscribes the subscriber connection to the channels (on a cluster each on the shard of its slot). */
  async subscribe (...channels: string[]): Promise<void> {
    if (channels.length === 0) return
    if (!this.cluster) {
      await this.subscriber.subscribe(...channels)
      return
    }
    await Promise.all(channels.map(channel => this.subscriber.ssubscribe(channel)))
  }

  unsubscribe (channel: string): Promise<unknown> {
    return this.cluster ? this.subscriber.sunsubscribe(channel) : this.subscriber.unsubscribe(channel)
  }

  /** Every message of every channel subscribed through `subscribe`. */
  onMessage (fn: (channel: string, payload: string) => void): void {
    this.subscriber.on(this.cluster ? 'smessage' : 'message', fn)
  }

  /**
   * Writes that belong together: one MULTI on a single Redis (others see all or
   * none); on a cluster a batch, each write on its own shard.
   */
  batch (): ChainableCommander {
    return this.cluster ? replayBatch(this.commands) : this.commands.multi()
  }

  /** Redis Cluster: `fn` removes a crashed instance's entries from the keys this plugin indexed per instance. */
  onInstanceGone (fn: GoneSweeper): void {
    this.goneSweepers.push(fn)
  }

  /**
   * Called once across the cluster, by the instance that claimed the crashed
   * `serverId`, after it swept that instance's presence: the other plugins'
   * sweeps run, then the swept count moves (`sweptKey`), so an instance that was
   * not dead after all writes its entries again on its next beat.
   */
  async instanceGone (serverId: string): Promise<void> {
    for (const fn of this.goneSweepers) await fn(serverId)
    const key = sweptKey(this.prefix, serverId)
    await this.commands.multi().incr(key).pexpire(key, this.instanceTtlMs * 10).exec()
  }

  /** Registers what this instance keeps in Redis; restored in registration order. */
  addRestorer (restorer: Restorer): void {
    this.restorers.push(restorer)
  }

  /**
   * Rewrites this instance's heartbeat and, in the same MULTI, every entry the
   * restorers vouch for. Runs when Redis is (back) up and when a beat finds the
   * heartbeat key gone; a request while one runs runs once more after it.
   */
  restore (): Promise<void> {
    if (this.restoring) {
      this.restoreAgain = true
      return this.restoring
    }
    this.restoring = (async () => {
      do {
        this.restoreAgain = false
        if (!this.ready) return
        try {
          // read before writing: a sweep of this instance that ends after this read moves the count, and the next beat writes again
          const swept = await this.commands.get(sweptKey(this.prefix, this.serverId))
          for (const r of this.restorers) await r.prepare?.()
          const tx = this.batch()
          tx.set(instanceKey(this.prefix, this.serverId), String(Date.now()), 'PX', this.instanceTtlMs)
          for (const r of this.restorers) r.write(tx)
          // a command refused when queued (OOM, say) aborts the MULTI: its own error names the cause, not EXECABORT
          const failure = await tx.exec().then(
            results => results?.find(([err]) => err)?.[0] ?? null,
            (err: Error & { previousErrors?: Error[] }) => err.previousErrors?.[0] ?? err
          )
          const ok = failure === null
          for (const r of this.restorers) r.written?.(ok)
          if (!ok) throw new Error(`the transaction failed: ${failure.message}`)
          this.sweptSeen = swept
          this.registered = true
          this.restoreError = undefined
          this.log.info({ event: 'redis.restored', serverId: this.serverId }, 'heartbeat and this instance\'s entries rewritten')
        } catch (err) {
          this.registered = false
          this.restoreError = (err as Error).message
          this.log.warn({ event: 'redis.restore_failed', reason: (err as Error).message }, 'could not rewrite this instance\'s entries; /ready answers 503 until a rewrite succeeds (tried again on every heartbeat)')
          // on a cluster part of the batch (the heartbeat, say) may have been written, so no beat would notice: try again
          if (this.cluster) this.retryRestore()
        }
      } while (this.restoreAgain)
    })().finally(() => { this.restoring = null })
    return this.restoring
  }

  /** Resolves when the restore in flight (if any) has ended. */
  async settled (): Promise<void> {
    await this.restoring
  }

  /** Why this instance cannot serve through Redis, or null: connections down, or connected but its entries not written. */
  problem (): string | null {
    if (!this.ready) return `redis is ${this.status}`
    if (!this.registered) return `redis is reachable but this instance's entries are not written yet${this.restoreError ? ` (${this.restoreError})` : ''}; retrying`
    return null
  }

  private retryRestore (): void {
    if (this.restoreRetry !== undefined || this.closing) return
    this.restoreRetry = setTimeout(() => {
      this.restoreRetry = undefined
      if (this.ready && !this.closing) this.restore().catch(() => {})
    }, Math.max(50, Math.floor(this.instanceTtlMs / 3))).unref()
  }

  /** Keeps this instance's heartbeat key alive, so others can tell it from a crashed one. */
  startHeartbeat (): void {
    const beat = () => {
      if (!this.ready || this.restoring) return
      // GET: a key that was gone (Redis lost it, or this process stalled past the TTL) means peers may have dropped our entries;
      // a swept count that moved means a peer swept this instance while it was restoring (the sweep may have removed what it wrote);
      // a restore that failed is tried again
      Promise.all([
        this.commands.set(instanceKey(this.prefix, this.serverId), String(Date.now()), 'PX', this.instanceTtlMs, 'GET'),
        this.commands.get(sweptKey(this.prefix, this.serverId))
      ]).then(([previous, swept]) => {
        if (previous === null || swept !== this.sweptSeen || !this.registered) this.restore().catch(() => {})
      }, () => {
        // Redis answers but refuses the write (out of memory, read-only): the restore says why, and /ready says 503 until one succeeds
        if (this.ready) this.restore().catch(() => {})
      })
      for (const fn of this.beatListeners) fn()
    }
    beat()
    this.heartbeat = setInterval(beat, Math.max(50, Math.floor(this.instanceTtlMs / 3))).unref()
  }

  /** Called on every heartbeat while Redis is up (sweeps of other instances' leftovers). */
  onBeat (fn: () => void): void {
    this.beatListeners.push(fn)
  }

  /** Stops the heartbeat and removes the key, so this instance's leftovers are ignored at once. */
  async stopHeartbeat (): Promise<void> {
    clearInterval(this.heartbeat)
    if (this.ready) await this.commands.del(instanceKey(this.prefix, this.serverId)).catch(() => {})
  }

  private changed (role: string, what: 'ready' | 'close'): void {
    const ready = this.ready
    if (ready) this.everReady = true
    if (ready && !this.wasReady) {
      this.wasReady = true
      this.log.info({ event: 'redis.ready', role }, 'redis connections ready')
      this.restore().catch(() => {})
      for (const fn of this.readyListeners) {
        try {
          fn()
        } catch (err) {
          this.log.error({ event: 'redis.ready_listener_failed', err }, 'a redis ready listener failed')
        }
      }
    } else if (!ready && this.wasReady && !this.closing) {
      this.wasReady = false
      this.registered = false
      this.log.warn({ event: 'redis.down', role, reason: what }, 'redis connection lost; requests that need redis answer unavailable until it returns')
    }
  }
}

/**
 * An ioredis `Cluster` with the same promises as the single connection: no
 * offline queue, a command in flight when its node is lost fails and is never
 * resent (retryDelayOnFailover 0), while refusals that mean "not executed"
 * (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) are followed or retried.
 */
function clusterClient (ClusterClient: typeof Cluster, nodes: Array<{ host: string, port: number }>, node: RedisOptions, url: string | undefined, sharded: boolean): Cluster {
  const { retryStrategy, lazyConnect: _lazy, enableAutoPipelining: _auto, ...redisOptions } = node
  if (url) {
    const parsed = new URL(url)
    if (parsed.username) redisOptions.username = decodeURIComponent(parsed.username)
    if (parsed.password) redisOptions.password = decodeURIComponent(parsed.password)
    if (parsed.protocol === 'rediss:') redisOptions.tls = {}
  }
  // a node's connection opens on its first command and may still be connecting for the next ones: they wait for it
  // (not yet sent, so never sent twice). Without the queue ioredis refuses them as "Connection is closed." (20 of 30
  // commands of a burst at start, measured). While the cluster is not ready every caller is refused before it sends
  // (RedisLink.requireReady), as with one Redis.
  redisOptions.enableOfflineQueue = true
  const options: ClusterOptions = {
    redisOptions,
    lazyConnect: true,
    enableOfflineQueue: true,
    // no auto-pipelining on a cluster: ioredis 6.0 groups a script by the slot of its first argument (the key count, for
    // sbLoad and sbSetState) and, when a grouped pipeline came back short during a cluster outage, threw a TypeError
    // out of autoPipelining.js that no caller can catch (seen in test/webhooks.native.test.ts on a 3-master cluster)
    enableAutoPipelining: false,
    clusterRetryStrategy: (attempt: number) => retryStrategy?.(attempt) ?? 1000,
    retryDelayOnFailover: 0,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    maxRedirections: 16,
    slotsRefreshInterval: 5000,
    shardedSubscribers: sharded
  }
  return new ClusterClient(nodes, options)
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The Redis connections and their health; null when REDIS_URL is unset. */
    redisLink: RedisLink | null
  }
}

/**
 * Registers @fastify/redis twice when a URL is given: `app.redis.commands`
 * (auto-pipelined) and `app.redis.subscriber` (SUBSCRIBE only). Registered
 * before the store, so on close it runs after the store: rooms flush, the store
 * closes, then the subscriber and the command connection quit, in that order.
 */
export default fp<RedisPluginOptions>(async function redis (app, opts) {
  if (!opts.url && !opts.sentinel && !opts.cluster) {
    app.decorate('redisLink', null)
    app.statusReport.section('redis', () => ({ enabled: false, status: 'disabled' }))
    return
  }
  // loaded only now: a server without Redis never pays for ioredis's modules (about 0.2 s of CPU at start)
  const [{ Cluster: ClusterClient, Redis: RedisClient }, { default: fastifyRedis }] = await Promise.all([import('ioredis'), import('@fastify/redis')])
  const timeoutMs = opts.timeoutMs ?? 5000
  const connect = (name: string): Redis => {
    const options: RedisOptions = { ...connectionOptions(timeoutMs, name), lazyConnect: true }
    if (opts.cluster) return clusterClient(ClusterClient, opts.cluster, options, opts.url, name === 'switchboard-subscriber') as unknown as Redis
    if (opts.sentinel) {
      // the master the Sentinels name, asked again on every reconnect; a master demoted under us answers READONLY: reconnect (never resend)
      // (no failoverDetector: its disconnect during a reconnect ends the client for good, as measured with ioredis 6.0)
      Object.assign(options, {
        sentinels: opts.sentinel.sentinels,
        name: opts.sentinel.name,
        sentinelRetryStrategy: options.retryStrategy,
        reconnectOnError: (err: Error) => err.message.startsWith('READONLY') ? 1 : false
      })
    }
    return opts.url ? new RedisClient(opts.url, options) : new RedisClient(options)
  }
  const commands = connect('switchboard-commands')
  const subscriber = connect('switchboard-subscriber')
  const link = new RedisLink(commands, subscriber, app.serverId, opts.instanceTtlMs ?? 15000, opts.keyPrefix ?? DEFAULT_KEY_PREFIX, app.log, opts.cluster !== undefined)
  app.decorate('redisLink', link)
  app.statusReport.section('redis', () => ({ enabled: true, status: link.status, registered: link.registered }))
  app.statusReport.check('redis', () => link.problem())
  app.metrics.collect(() => app.metrics.redisUp.set(link.ready ? 1 : 0))

  // The clients are ours (closeClient false): this plugin quits them in a logged order.
  // the first attempt is awaited (bounded by the timeout): a server that says it listens can use Redis, unless Redis is down
  const first = Promise.allSettled([commands.connect(), subscriber.connect()])
  let bound: NodeJS.Timeout | undefined
  await Promise.race([first, new Promise(resolve => { bound = setTimeout(resolve, timeoutMs) })])
  clearTimeout(bound)
  if (commands.status === 'ready' && subscriber.status === 'ready') {
    await app.register(fastifyRedis, { client: commands, namespace: 'commands', closeClient: false })
    await app.register(fastifyRedis, { client: subscriber, namespace: 'subscriber', closeClient: false })
  } else {
    // @fastify/redis waits for a client that is not ready, and the start would time out: an instance starts while
    // Redis is down (degraded, /ready 503) and connects when it is back; the decorator is the same
    app.decorate('redis', { commands, subscriber } as unknown as FastifyInstance['redis'])
    app.log.warn({ event: 'redis.unreachable_at_start', reason: `redis is ${link.status}` }, 'redis is not reachable yet; starting degraded, connecting in the background')
  }
  // the first restore (heartbeat) began when both connections came up: a server that says it is ready is registered
  await link.settled()
  link.startHeartbeat()
  app.log.info({ event: 'redis.connected', serverId: link.serverId, instanceTtlMs: link.instanceTtlMs, keyPrefix: link.prefix, mode: opts.cluster ? 'cluster' : opts.sentinel ? 'sentinel' : 'single' }, 'connected to redis')

  app.addHook('onClose', async () => {
    await link.stopHeartbeat()
    link.closing = true
    for (const [step, client] of [['redis_subscriber_closed', subscriber], ['redis_commands_closed', commands]] as const) {
      const started = Date.now()
      // QUIT waits for its reply; a node that died (a cluster's killed master) must not hold the shutdown
      let bound: NodeJS.Timeout | undefined
      const quit = client.quit().then(() => true, () => false)
      const quitted = await Promise.race([quit, new Promise<boolean>(resolve => { bound = setTimeout(resolve, timeoutMs, false) })])
      clearTimeout(bound)
      if (!quitted) client.disconnect()
      app.log.info({ event: 'shutdown.step', step, ms: Date.now() - started }, 'redis connection closed')
    }
  })
}, { name: 'redis', fastify: '5.x', dependencies: ['identity', 'status', 'metrics'] })
