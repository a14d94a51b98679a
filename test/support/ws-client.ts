import WebSocket, { type ClientOptions } from 'ws'
import http from 'node:http'
import net from 'node:net'

export type Msg = Record<string, any>

export interface ConnectOptions {
  clientId?: string
  token?: string
  headers?: Record<string, string>
  /** Source address, e.g. 127.0.0.7, to act as a distinct client key. */
  localAddress?: string
  /** false: never answer server pings (a dead peer). */
  autoPong?: boolean
  /** Wait for `welcome` [true]. */
  waitWelcome?: boolean
}

/**
 * A real `ws` client that records every message, so a test can wait for the
 * next one of a type, or send a request and wait for the reply with its id.
 */
export class TestClient {
  readonly received: Msg[] = []
  private cursor = 0
  private waiters: Array<() => void> = []
  private nextId = 1
  welcome: Msg = {}
  readonly closed: Promise<{ code: number, reason: string }>

  constructor (readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.received.push(JSON.parse(data.toString()))
      for (const w of this.waiters.splice(0)) w()
    })
    this.closed = new Promise(resolve => ws.once('close', (code, reason) => {
      for (const w of this.waiters.splice(0)) w()
      resolve({ code, reason: reason.toString() })
    }))
  }

  static async connect (wsUrl: string, opts: ConnectOptions = {}): Promise<TestClient> {
    const url = new URL(wsUrl)
    if (opts.clientId) url.searchParams.set('clientId', opts.clientId)
    if (opts.token) url.searchParams.set('token', opts.token)
    const wsOpts: ClientOptions = { headers: opts.headers, autoPong: opts.autoPong ?? true }
    if (opts.localAddress) wsOpts.localAddress = opts.localAddress
    const ws = new WebSocket(url, wsOpts)
    const client = new TestClient(ws)
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)))
    })
    if (opts.waitWelcome !== false) client.welcome = await client.next('welcome')
    return client
  }

  get open (): boolean {
    return this.ws.readyState === WebSocket.OPEN
  }

  send (msg: Msg | string): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg))
  }

  /** Sends with a fresh id and resolves with the reply carrying that id (ack or error). */
  async request (msg: Msg, timeoutMs = Infinity): Promise<Msg> {
    const id = `r${this.nextId++}`
    this.send({ ...msg, id })
    return this.waitFor(m => m.id === id, `reply to ${msg.type} ${id}`, timeoutMs, true)
  }

  /** The next message of `type` not yet taken by `next`. */
  async next (type: string, timeoutMs = Infinity): Promise<Msg> {
    return this.waitFor(m => m.type === type, type, timeoutMs)
  }

  /**
   * Waits for a message matching `match`; by default only after the cursor,
   * consuming it. It fails when the connection closes first; without
   * `timeoutMs` it has no deadline of its own (tap's test timeout reports a
   * hang, and a loaded machine is not a failure).
   */
  async waitFor (match: (m: Msg) => boolean, what: string, timeoutMs = Infinity, anywhere = false): Promise<Msg> {
    const until = Date.now() + timeoutMs
    for (;;) {
      const from = anywhere ? 0 : this.cursor
      for (let i = from; i < this.received.length; i++) {
        if (match(this.received[i])) {
          if (!anywhere) this.cursor = i + 1
          return this.received[i]
        }
      }
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`connection closed while waiting for ${what}`)
      const left = until - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.received.slice(-5))}`)
      await new Promise<void>(resolve => {
        const timer = Number.isFinite(left) ? setTimeout(resolve, left) : undefined
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** All received messages of a type. */
  all (type: string): Msg[] {
    return this.received.filter(m => m.type === type)
  }

  async close (): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return
    this.ws.close()
    await this.closed
  }
}

/** The status, body (parsed when JSON) and headers of an HTTP answer. */
export function readAnswer (res: http.IncomingMessage): Promise<{ status: number, body: any, headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    let text = ''
    res.on('data', (c: Buffer) => { text += c.toString() })
    res.on('error', reject)
    res.on('end', () => {
      let body: any = text
      try { body = JSON.parse(text) } catch {}
      resolve({ status: res.statusCode ?? 0, body, headers: res.headers })
    })
  })
}

/** Attempts an upgrade and reports the HTTP answer when it is refused (status 101 when accepted). */
export async function tryUpgrade (wsUrl: string, opts: { headers?: Record<string, string>, localAddress?: string, query?: Record<string, string> } = {}): Promise<{ status: number, body: any, headers: http.IncomingHttpHeaders }> {
  const url = new URL(wsUrl)
  for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v)
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: opts.headers, localAddress: opts.localAddress })
    ws.once('open', () => {
      resolve({ status: 101, body: null, headers: {} })
      ws.close()
    })
    ws.once('unexpected-response', (_req, res) => { readAnswer(res).then(resolve, reject) })
    ws.once('error', (err) => {
      if (!(err.message ?? '').startsWith('Unexpected server response')) reject(err)
    })
  })
}

/** A raw TCP client that completes the upgrade and then never reads or answers: it holds shutdown open. */
export async function stubbornClient (port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.once('connect', () => {
      socket.write('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
    })
    socket.once('data', chunk => chunk.toString().startsWith('HTTP/1.1 101') ? resolve() : reject(new Error(chunk.toString())))
  })
  socket.on('error', () => {})
  return socket
}
