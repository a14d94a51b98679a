import type { ClusterRequests } from '../cluster/requests.js'
import type { Session, SessionRegistry } from '../engine/sessions.js'

/** What an operator sees of one connection, on whichever instance holds it. */
export interface ConnectionView {
  connectionId: string
  clientId: string
  clientKey: string
  serverId: string
  remoteAddress: string
  /** switchboard (/ws), pusher, y-websocket, hocuspocus, ... */
  protocol: string
  openedAt: string
  rooms: string[]
  bufferedBytes: number
}

export interface ConnectionFilter {
  clientId?: string
  room?: string
  serverId?: string
  /** A piece of the client id, connection id, client key or address. */
  search?: string
}

export interface ConnectionQuery extends ConnectionFilter {
  /** Only connections whose id sorts after this one (the previous page's `nextCursor`). */
  cursor?: string
  limit: number
}

export interface ConnectionPage {
  connections: ConnectionView[]
  /** Matching connections on every instance that answered. */
  total: number
  nextCursor?: string
  /** Instances that did not answer (their connections are missing from the page). */
  unreachable?: string[]
}

/** Who to disconnect: one connection, or every connection of a client id. */
export type DisconnectTarget = { connectionId: string } | { clientId: string }

/** The close code of an operator's disconnect; the `disconnected` frame before it carries the reason. */
export const ADMIN_CLOSE_CODE = 4001

/** A close reason must fit a close frame (123 bytes); the API allows 100 characters of ASCII-safe text. */
export const REASON_MAX_LENGTH = 100

export interface InstanceSnapshot {
  serverId: string
  [field: string]: unknown
}

interface LocalPage { connections: ConnectionView[], total: number, more: boolean }

function matches (conn: Session, serverId: string, f: ConnectionFilter): boolean {
  if (f.serverId !== undefined && f.serverId !== serverId) return false
  if (f.clientId !== undefined && conn.clientId !== f.clientId) return false
  if (f.room !== undefined && ![...channelsOf(conn)].includes(f.room)) return false
  if (f.search !== undefined) {
    const s = f.search.toLowerCase()
    if (![conn.clientId, conn.id, conn.clientKey, conn.remoteAddress].some(v => v.toLowerCase().includes(s))) return false
  }
  return true
}

/** The rooms, Pusher channels or documents a session is in, as its protocol names them. */
function channelsOf (conn: Session): Iterable<string> {
  return conn.protocol.channels?.(conn) ?? conn.rooms
}

export function viewOf (conn: Session, serverId: string): ConnectionView {
  return {
    connectionId: conn.id,
    clientId: conn.clientId,
    clientKey: conn.clientKey,
    serverId,
    remoteAddress: conn.remoteAddress,
    protocol: conn.protocol.name,
    openedAt: new Date(conn.openedAt).toISOString(),
    rooms: [...channelsOf(conn)],
    bufferedBytes: conn.bufferedAmount
  }
}

/**
 * The operator's views and actions over every instance: each question goes to
 * all live instances through the cluster requests (one node: only this one),
 * and each instance answers from its own connection registry.
 */
export class Operator {
  constructor (
    private readonly connections: SessionRegistry,
    private readonly requests: ClusterRequests,
    private readonly serverId: string,
    snapshot: () => InstanceSnapshot,
    private readonly log: { info: (o: object, m: string) => void }
  ) {
    requests.handle('admin.instance', () => snapshot())
    requests.handle('admin.connections', body => this.localPage(body as ConnectionQuery))
    requests.handle('admin.disconnect', body => {
      const { target, reason, by } = body as { target: DisconnectTarget, reason: string, by: string }
      return this.disconnectHere(target, reason, by)
    })
  }

  /** Every live instance's snapshot; an instance that did not answer in time is listed as unreachable. */
  async instances (): Promise<{ instances: InstanceSnapshot[], unreachable: string[] }> {
    const answers = await this.requests.gather<InstanceSnapshot>('admin.instance', {})
    return {
      instances: answers.filter(a => a.result !== undefined).map(a => a.result as InstanceSnapshot),
      unreachable: answers.filter(a => a.result === undefined).map(a => `${a.serverId}: ${a.error ?? 'no answer'}`)
    }
  }

  /** One page of the matching connections of the whole cluster, in connection id order (keyset pagination). */
  async page (query: ConnectionQuery): Promise<ConnectionPage> {
    const answers = await this.requests.gather<LocalPage>('admin.connections', query)
    const all: ConnectionView[] = []
    let total = 0
    let more = false
    const unreachable: string[] = []
    for (const a of answers) {
      if (a.result === undefined) {
        unreachable.push(`${a.serverId}: ${a.error ?? 'no answer'}`)
        continue
      }
      all.push(...a.result.connections)
      total += a.result.total
      more ||= a.result.more
    }
    all.sort((x, y) => x.connectionId < y.connectionId ? -1 : 1)
    const connections = all.slice(0, query.limit)
    const page: ConnectionPage = { connections, total }
    if (more || all.length > query.limit) page.nextCursor = connections[connections.length - 1].connectionId
    if (unreachable.length > 0) page.unreachable = unreachable
    return page
  }

  /** Disconnects the target on whichever instances hold it; resolves with how many connections were closed. */
  async disconnect (target: DisconnectTarget, reason: string, by: string): Promise<{ disconnected: number }> {
    const answers = await this.requests.gather<{ disconnected: number }>('admin.disconnect', { target, reason, by })
    let disconnected = 0
    for (const a of answers) disconnected += a.result?.disconnected ?? 0
    return { disconnected }
  }

  /** This instance's part of a page: at most `limit` matches after the cursor, and whether more follow. */
  private localPage (query: ConnectionQuery): LocalPage {
    const found: Session[] = []
    let total = 0
    for (const conn of this.connections.all()) {
      if (!matches(conn, this.serverId, query)) continue
      total++
      if (query.cursor === undefined || conn.id > query.cursor) found.push(conn)
    }
    found.sort((a, b) => a.id < b.id ? -1 : 1)
    return { connections: found.slice(0, query.limit).map(c => viewOf(c, this.serverId)), total, more: found.length > query.limit }
  }

  /** Tells each targeted connection here why (`disconnected`), then closes it with 4001. */
  private disconnectHere (target: DisconnectTarget, reason: string, by: string): { disconnected: number } {
    const targets: Session[] = []
    if ('connectionId' in target) {
      const conn = this.connections.get(target.connectionId)
      if (conn) targets.push(conn)
    } else {
      for (const conn of this.connections.all()) if (conn.clientId === target.clientId) targets.push(conn)
    }
    for (const conn of targets) {
      // in its protocol's words: the native one sends `disconnected`, then closes with 4001
      this.connections.disconnect(conn, reason)
      this.log.info({ event: 'admin.disconnected', connectionId: conn.id, clientId: conn.clientId, by, reason }, 'an operator disconnected a connection')
    }
    return { disconnected: targets.length }
  }
}
