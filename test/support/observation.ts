// What an operator or a user can see of a running server from outside: the
// admin listing, /metrics, /health, /ready and the Yjs documents over HTTP.
import * as Y from 'yjs'

export interface ServerTarget {
  /** http://127.0.0.1:PORT */
  url: string
  port: number
}

/** The bearer token the matrix servers are started with (ADMIN_TOKEN). */
export const ADMIN_TOKEN = 'matrix-admin-token-0123456789'

export interface ListedConnection {
  connectionId: string
  clientId: string
  clientKey: string
  protocol: string
  [field: string]: unknown
}

/** Every connection GET /api/admin/connections lists (with the admin token); throws with the answer when it is not 200. */
export async function adminConnections (server: ServerTarget, token = ADMIN_TOKEN): Promise<ListedConnection[]> {
  const res = await fetch(`${server.url}/api/admin/connections?limit=500`, { headers: { authorization: `Bearer ${token}` } })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`GET /api/admin/connections answered ${res.status}: ${text.slice(0, 300)}`)
  return (JSON.parse(text) as { connections: ListedConnection[] }).connections
}

/** The listed connection of `protocol` whose client key is `clientKey`, if any. */
export async function listed (server: ServerTarget, protocol: string, clientKey: string): Promise<ListedConnection | undefined> {
  return (await adminConnections(server)).find(c => c.protocol === protocol && c.clientKey === clientKey)
}

/** The raw Prometheus text of GET /metrics. */
export async function metricsText (server: ServerTarget): Promise<string> {
  return await (await fetch(`${server.url}/metrics`)).text()
}

/**
 * The value of a sample `name{labels}` in Prometheus text (other labels of the
 * sample allowed), summed over the samples that match; undefined when none does.
 */
export function sampleValue (text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let sum: number | undefined
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const rest = line.slice(name.length)
    if (rest[0] !== '{' && rest[0] !== ' ') continue
    const labelText = rest[0] === '{' ? rest.slice(1, rest.indexOf('}')) : ''
    const found: Record<string, string> = {}
    for (const m of labelText.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) found[m[1]] = m[2]
    if (!Object.entries(labels).every(([k, v]) => found[k] === v)) continue
    const value = Number(line.slice(line.lastIndexOf(' ') + 1))
    sum = (sum ?? 0) + value
  }
  return sum
}

/** A sample of GET /metrics now (undefined when the server does not expose it). */
export async function metric (server: ServerTarget, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  return sampleValue(await metricsText(server), name, labels)
}

export async function statusOf (server: ServerTarget, path: string): Promise<number> {
  try {
    return (await fetch(`${server.url}${path}`)).status
  } catch {
    return 0
  }
}

export interface DocumentView {
  /** The status of GET /api/docs/:doc/update. */
  status: number
  /** The state vector, hex: equal vectors and equal contents = the same document. */
  stateVector: string
  /** The document's `log` array (what the matrix writes). */
  log: unknown[]
}

/** A document as GET /api/docs/:doc/update gives it, rebuilt in a fresh Y.Doc. */
export async function documentView (server: ServerTarget, doc: string, token?: string): Promise<DocumentView> {
  const res = await fetch(`${server.url}/api/docs/${encodeURIComponent(doc)}/update`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
  const body = Buffer.from(await res.arrayBuffer())
  if (res.status !== 200) return { status: res.status, stateVector: '', log: [] }
  const ydoc = new Y.Doc()
  Y.applyUpdate(ydoc, body)
  const view = { status: 200, stateVector: Buffer.from(Y.encodeStateVector(ydoc)).toString('hex'), log: ydoc.getArray('log').toJSON() }
  ydoc.destroy()
  return view
}

/** GET /api/status's `yjs.documents`: documents held in memory. */
export async function documentsInMemory (server: ServerTarget): Promise<number | undefined> {
  const body = await (await fetch(`${server.url}/api/status`)).json() as { yjs?: { documents?: number } }
  return body.yjs?.documents
}
