import type { ChainableCommander, Redis } from 'ioredis'
import { RedisUnavailableError, SWEEP_DEAD_INSTANCES, instanceKey, type RedisLink } from '../core/redis.js'

/** Delivers, here, a direct-message frame sent on another instance to a client connected here. */
export type ClientFrameHandler = (clientId: string, frame: string) => void

/**
 * Where each client id has sessions that direct messages reach, across the
 * instances: a client is made reachable before it is told it is connected, so
 * a message sent after that is delivered, never queued. One node uses
 * `LocalClients` (nobody else); with REDIS_URL `RedisClients`.
 */
export interface ClientDirectory {
  readonly kind: 'local' | 'redis'
  /** Direct-message frames sent from other instances go to `fn`. */
  onClientFrame (fn: ClientFrameHandler): void
  /** A session of the client opens here: resolves once a message sent from any instance reaches it. */
  clientConnected (clientId: string): Promise<void>
  /** A session of the client closed here (or never opened). */
  clientDisconnected (clientId: string): void
  /** Sends a direct-message frame to the client's sessions on other instances; resolves with how many it reached. */
  publishToClient (clientId: string, frame: string): Promise<number>
}

/** One instance: nobody else to reach. */
export class LocalClients implements ClientDirectory {
  readonly kind = 'local'
  onClientFrame (): void {}
  async clientConnected (): Promise<void> {}
  clientDisconnected (): void {}
  async publishToClient (): Promise<number> {
    return 0
  }
}

/*
 * sb:conns:<clientId>     hash serverId → sessions there: `delivered` across instances
 * sb:ch:server:<serverId> always subscribed: "<origin serverId>\n<clientId>\n<frame>"
 * Entries of an instance whose heartbeat key expired are ignored and removed
 * by the script that reads them; this instance rewrites its own when Redis is
 * back (RedisLink.restore).
 * On a Redis Cluster (sharded channels), where a script cannot read the
 * heartbeat keys of other slots:
 *   sb:conns:idx:<serverId> set of the client ids that instance has entries for,
 *                           so the instance that claims it after a crash removes them
 */
const serverChannel = (prefix: string, serverId: string) => `${prefix}ch:server:${serverId}`

/**
 * Publishes to each other live instance holding sessions of the client and
 * counts those sessions only where the PUBLISH reached a subscriber: an
 * instance that died (its socket closed) or lost Redis counts 0 and its entry
 * goes (it rewrites it when it is back).
 */
const PUBLISH_TO_CLIENT = SWEEP_DEAD_INSTANCES + `
local live = sweepDead(KEYS[1], ARGV[1], ARGV[2], function (field) return field end, false)
local reached = 0
for _, entry in ipairs(live) do
  if redis.call('PUBLISH', ARGV[3] .. entry[3], ARGV[4]) > 0 then
    reached = reached + tonumber(entry[2])
  else
    redis.call('HDEL', KEYS[1], entry[1])
  end
end
return reached`

interface Scripts {
  sbPublishToClient (key: string, me: string, prefix: string, channelPrefix: string, payload: string): Promise<number>
}

interface Log {
  warn: (o: object, m: string) => void
}

/** Client reachability through Redis: this instance's counts are kept here (the truth) and rewritten whenever Redis lost them. */
export class RedisClients implements ClientDirectory {
  readonly kind = 'redis'
  /** Frames received for clients connected here. */
  received = 0
  /** clientId → sessions here (what sb:conns holds for this instance). */
  private readonly local = new Map<string, number>()
  /** Entries whose write Redis may have missed: rewritten (or removed) by the restore. */
  private readonly stale = new Set<string>()
  private restoring: Set<string> | null = null
  /** Settles once this instance's channel subscription was last attempted: a count is written only after it. */
  private serverSubscribed: Promise<void>
  private firstSubscribed: () => void = () => {}
  private readonly handlers: ClientFrameHandler[] = []
  private readonly commands: Redis & Scripts
  private readonly channel: string

  constructor (private readonly link: RedisLink, private readonly count: (direction: 'published' | 'received') => void, private readonly log: Log) {
    link.commands.defineCommand('sbPublishToClient', { numberOfKeys: 1, lua: PUBLISH_TO_CLIENT })
    this.commands = link.commands as Redis & Scripts
    this.channel = serverChannel(link.prefix, link.serverId)
    this.serverSubscribed = new Promise(resolve => { this.firstSubscribed = resolve })
    link.onMessage((channel: string, payload: string) => { if (channel === this.channel) this.onMessage(payload) })
    if (link.cluster) link.onInstanceGone(dead => this.sweepGone(dead))
    link.addRestorer({ prepare: () => this.resubscribe(), write: tx => this.rewrite(tx), written: ok => this.rewritten(ok) })
  }

  onClientFrame (fn: ClientFrameHandler): void {
    this.handlers.push(fn)
  }

  /**
   * A session of the client is about to open: counted here, then written to
   * Redis (and this instance's channel subscribed) before this resolves.
   * While Redis is down it resolves at once: the restore writes it.
   */
  async clientConnected (clientId: string): Promise<void> {
    this.local.set(clientId, (this.local.get(clientId) ?? 0) + 1)
    if (!this.link.ready) {
      this.stale.add(clientId)
      return
    }
    try {
      await this.serverSubscribed
      await this.write(clientId)
    } catch {
      // marked stale by the write: the restore rewrites it when redis is back
    }
  }

  clientDisconnected (clientId: string): void {
    const n = (this.local.get(clientId) ?? 0) - 1
    if (n > 0) this.local.set(clientId, n)
    else this.local.delete(clientId)
    this.write(clientId).catch(() => {})
  }

  async publishToClient (clientId: string, frame: string): Promise<number> {
    if (!this.link.ready) throw new RedisUnavailableError(`redis is ${this.link.status}; the message cannot reach other instances nor be queued; retry later`)
    try {
      if (this.link.cluster) return await this.publishSharded(clientId, frame)
      const reached = await this.commands.sbPublishToClient(this.connsKey(clientId), this.link.serverId, instanceKey(this.link.prefix, ''), serverChannel(this.link.prefix, ''), `${this.link.serverId}\n${clientId}\n${frame}`)
      this.count('published')
      return reached
    } catch (err) {
      throw new RedisUnavailableError(`redis did not accept the message: ${(err as Error).message}`)
    }
  }

  /**
   * Redis Cluster: the client's instances are read, then each gets its frame on
   * its own (sharded) channel; an instance no subscriber of which heard it
   * loses its entry, as in the script of a single Redis.
   */
  private async publishSharded (clientId: string, frame: string): Promise<number> {
    const key = this.connsKey(clientId)
    const entries = Object.entries(await this.commands.hgetall(key)).filter(([server]) => server !== this.link.serverId)
    const payload = `${this.link.serverId}\n${clientId}\n${frame}`
    const heard = await Promise.all(entries.map(([server]) => this.link.publish(serverChannel(this.link.prefix, server), payload)))
    let reached = 0
    entries.forEach(([server, n], i) => {
      if (heard[i] > 0) reached += Number(n)
      else this.commands.hdel(key, server).catch(() => {})
    })
    this.count('published')
    return reached
  }

  /** Redis Cluster: a crashed instance's entries, found through its index, go. */
  private async sweepGone (dead: string): Promise<void> {
    const idx = this.indexKey(dead)
    await Promise.all((await this.commands.smembers(idx)).map(clientId => this.commands.hdel(this.connsKey(clientId), dead)))
    await this.commands.del(idx)
  }

  /** On shutdown: this instance's counts leave Redis. */
  withdraw (tx: ChainableCommander): void {
    for (const clientId of this.local.keys()) tx.hdel(this.connsKey(clientId), this.link.serverId)
    if (this.link.cluster) tx.del(this.indexKey(this.link.serverId))
  }

  private connsKey (clientId: string): string {
    return `${this.link.prefix}conns:${clientId}`
  }

  private indexKey (serverId: string): string {
    return `${this.link.prefix}conns:idx:${serverId}`
  }

  /** Writes the client's count here as it is now (set or removed); a lost write is marked stale for the restore. */
  private async write (clientId: string): Promise<void> {
    const n = this.local.get(clientId) ?? 0
    if (!this.link.ready) {
      this.stale.add(clientId)
      throw new RedisUnavailableError(`redis is ${this.link.status}`)
    }
    try {
      if (this.link.cluster) {
        // indexed first: a crash between the two leaves an index entry to sweep, never an entry nobody can find
        if (n > 0) await this.commands.sadd(this.indexKey(this.link.serverId), clientId)
        if (n > 0) await this.commands.hset(this.connsKey(clientId), this.link.serverId, n)
        else await this.commands.hdel(this.connsKey(clientId), this.link.serverId)
        if (n === 0) await this.commands.srem(this.indexKey(this.link.serverId), clientId)
      } else if (n > 0) await this.commands.hset(this.connsKey(clientId), this.link.serverId, n)
      else await this.commands.hdel(this.connsKey(clientId), this.link.serverId)
    } catch (err) {
      this.stale.add(clientId)
      this.log.warn({ event: 'bus.write_failed', reason: (err as Error).message }, 'a cluster bookkeeping write failed; it is redone when redis is back')
      throw err
    }
  }

  private onMessage (payload: string): void {
    const first = payload.indexOf('\n')
    const second = payload.indexOf('\n', first + 1)
    if (first < 0 || second < 0 || payload.slice(0, first) === this.link.serverId) return
    this.count('received')
    this.received++
    const clientId = payload.slice(first + 1, second)
    const frame = payload.slice(second + 1)
    for (const fn of this.handlers) fn(clientId, frame)
  }

  private async resubscribe (): Promise<void> {
    const subscribed = this.link.subscribe(this.channel)
    this.serverSubscribed = subscribed.catch(() => {})
    this.serverSubscribed.then(this.firstSubscribed)
    await subscribed
  }

  private rewrite (tx: ChainableCommander): void {
    for (const [clientId, n] of this.local) {
      if (this.link.cluster) tx.sadd(this.indexKey(this.link.serverId), clientId)
      tx.hset(this.connsKey(clientId), this.link.serverId, n)
    }
    for (const clientId of this.stale) {
      if (!this.local.has(clientId)) tx.hdel(this.connsKey(clientId), this.link.serverId)
    }
    this.restoring = new Set(this.stale)
    this.stale.clear()
  }

  private rewritten (ok: boolean): void {
    const taken = this.restoring
    this.restoring = null
    if (ok || !taken) return
    for (const clientId of taken) this.stale.add(clientId)
  }
}
