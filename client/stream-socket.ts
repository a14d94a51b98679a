import type { WebSocketLike } from './socket.js'
import type { JsonObject } from '../protocol/frames.js'

/** How the client reaches the server: a WebSocket, or a receive-only HTTP stream plus HTTP writes. */
export type TransportName = 'websocket' | 'sse' | 'stream'

/** One event of `GET /stream` (an NDJSON line) or `GET /sse`. */
interface StreamEvent { id: string, event: string, data: JsonObject }

/** An open HTTP stream: delivers its events, then `onEnd` once. */
interface EventStream { close (): void }
type OpenStream = (url: string, headers: Record<string, string>, onEvent: (e: StreamEvent) => void, onEnd: (status: number, body: string) => void) => EventStream

/** `GET /stream` read with `fetch` and a streamed body (Node 18+, browsers). */
const openNdjson: OpenStream = (url, headers, onEvent, onEnd) => {
  const abort = new AbortController()
  let ended = false
  const end = (status: number, body: string): void => {
    if (ended) return
    ended = true
    onEnd(status, body)
  }
  const read = async (): Promise<void> => {
    const res = await fetch(url, { headers, signal: abort.signal })
    if (res.status !== 200 || res.body === null) return end(res.status, await res.text())
    const decoder = new TextDecoder()
    let buffer = ''
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true })
      let nl: number
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim()
        buffer = buffer.slice(nl + 1)
        if (line !== '' && !ended) onEvent(JSON.parse(line) as StreamEvent)
      }
    }
    end(200, '')
  }
  read().catch(() => end(0, ''))
  return { close: () => { ended = true; abort.abort() } }
}

interface EventSourceLike {
  addEventListener (name: string, fn: (e: { data?: string, lastEventId?: string }) => void): void
  close (): void
}
const SSE_EVENTS = ['welcome', 'joined', 'reset', 'room_message', 'message', 'state', 'presence', 'history_cleared', 'exec_result',
  'server_shutdown', 'disconnected', 'token_expiring', 'close', 'stream_error']

/** `GET /sse` read with the browser's `EventSource` (its own reconnects are turned off: the client reconnects). */
const openSse: OpenStream = (url, _headers, onEvent, onEnd) => {
  const Ctor = (globalThis as { EventSource?: new (url: string) => EventSourceLike }).EventSource as new (url: string) => EventSourceLike
  const source = new Ctor(url)
  let opened = false
  let ended = false
  for (const name of SSE_EVENTS) {
    source.addEventListener(name, e => {
      opened = true
      if (!ended) onEvent({ id: e.lastEventId ?? '', event: name === 'stream_error' ? 'error' : name, data: JSON.parse(e.data ?? 'null') as JsonObject })
    })
  }
  source.addEventListener('error', () => {
    if (ended) return
    ended = true
    source.close()
    onEnd(opened ? 200 : 0, '')
  })
  return { close: () => { ended = true; source.close() } }
}

export function sseAvailable (): boolean {
  return typeof (globalThis as { EventSource?: unknown }).EventSource === 'function'
}

export interface StreamSocketOptions {
  transport: 'sse' | 'stream'
  /** The server's http(s) address. */
  url: string
  clientId?: string
  token?: string
}

/**
 * The WebSocket API over `GET /stream` (or `/sse`) and the HTTP API, so the
 * client runs unchanged on it. A stream's rooms are fixed per request: a
 * join or leave opens a new stream with the new room list and the last event
 * id, which resumes every room exactly where it was. Writes go to the HTTP
 * API with the frame's idempotency key (`Idempotency-Key`). Frames with no
 * HTTP counterpart (`exec`, `rpc`) are answered with an error.
 */
export class StreamSocket implements WebSocketLike {
  readyState = 0
  onopen: ((ev: unknown) => void) | null = null
  onmessage: ((ev: { data: unknown }) => void) | null = null
  onclose: ((ev: { code: number, reason: string }) => void) | null = null
  onerror: ((ev: unknown) => void) | null = null
  private readonly base: URL
  private stream: EventStream | null = null
  /** The rooms of the current stream, and those a join or leave will put in the next one. */
  private rooms: string[] = []
  private wanted: string[] = []
  /** Each room's position (`epoch:offset`), from the event ids and from `join` frames' `since`/`epoch`. */
  private readonly positions = new Map<string, string>()
  /** Join frames waiting for their room's `joined`/`reset` on the next stream. */
  private readonly joins = new Map<string, string>()
  private reopenScheduled = false
  private clientId: string | undefined
  private token: string | undefined

  constructor (private readonly opts: StreamSocketOptions) {
    this.base = new URL(opts.url)
    if (this.base.protocol === 'ws:') this.base.protocol = 'http:'
    if (this.base.protocol === 'wss:') this.base.protocol = 'https:'
    this.base.pathname = '/'
    this.clientId = opts.clientId
    this.token = opts.token
    this.reopen()
  }

  send (data: string): void {
    const frame = JSON.parse(data) as JsonObject
    const id = String(frame.id)
    switch (frame.type) {
      case 'join': {
        const room = String(frame.room)
        if (typeof frame.since === 'number') this.positions.set(room, `${typeof frame.epoch === 'string' ? frame.epoch : ''}:${frame.since}`)
        else this.positions.delete(room)
        this.joins.set(room, id)
        if (!this.wanted.includes(room)) this.wanted.push(room)
        return this.scheduleReopen()
      }
      case 'leave': {
        const room = String(frame.room)
        this.wanted = this.wanted.filter(r => r !== room)
        this.positions.delete(room)
        this.scheduleReopen()
        return this.deliver({ type: 'left', room, id })
      }
      case 'ping':
        return this.deliver({ type: 'pong', id })
      case 'publish':
        return this.write(id, 'POST', `api/rooms/${encodeURIComponent(String(frame.room))}/publish`, frame, { data: frame.data },
          body => ({ type: 'published', room: frame.room, offset: body.offset, messageId: body.messageId }))
      case 'update': {
        const body: JsonObject = { patch: frame.patch }
        if (frame.baseVersion !== undefined) body.baseVersion = frame.baseVersion
        return this.write(id, 'PATCH', `api/rooms/${encodeURIComponent(String(frame.room))}/state`, frame, body,
          reply => ({ type: 'updated', room: frame.room, version: reply.version }))
      }
      case 'send':
        return this.write(id, 'POST', 'api/send', frame, { to: frame.to, text: frame.text },
          reply => ({ type: 'sent', messageId: reply.messageId, delivered: reply.delivered, queued: reply.queued }))
      case 'refresh':
        // no refresh over a stream: the next stream carries the new token
        this.token = String(frame.token)
        this.scheduleReopen()
        return this.deliver({ type: 'ack', expiresAt: null, id })
      default:
        return this.deliver({ type: 'error', id, code: 'unsupported', message: `${String(frame.type)} needs a WebSocket; this client is on ${this.opts.transport}` })
    }
  }

  close (code = 1000, reason = ''): void {
    if (this.readyState === 3) return
    this.readyState = 3
    this.stream?.close()
    this.stream = null
    queueMicrotask(() => this.onclose?.({ code, reason }))
  }

  private headers (): Record<string, string> {
    return this.token !== undefined ? { authorization: `Bearer ${this.token}` } : {}
  }

  private deliver (frame: JsonObject): void {
    queueMicrotask(() => {
      if (this.readyState !== 3) this.onmessage?.({ data: JSON.stringify(frame) })
    })
  }

  /** An HTTP write; a failure to reach the server ends the connection, so the client resends it with its key after reconnecting. */
  private write (id: string, method: string, path: string, frame: JsonObject, body: JsonObject, ack: (reply: JsonObject) => JsonObject): void {
    if (this.clientId !== undefined) body.from = this.clientId
    const headers: Record<string, string> = { ...this.headers(), 'content-type': 'application/json' }
    if (typeof frame.idempotencyKey === 'string') headers['idempotency-key'] = frame.idempotencyKey
    fetch(new URL(path, this.base), { method, headers, body: JSON.stringify(body) }).then(async res => {
      const reply = await res.json() as JsonObject
      if (res.status >= 500 && reply.code === undefined) throw new Error(`status ${res.status}`)
      if (res.status !== 200) {
        const { statusCode: _s, error: _e, ...rest } = reply
        return this.deliver({ ...rest, type: 'error', id })
      }
      const out = ack(reply)
      if (res.headers.get('idempotent-replayed') === 'true') out.duplicate = true
      this.deliver({ ...out, id })
    }).catch(() => this.close(1006, `${method} ${path} failed`))
  }

  private scheduleReopen (): void {
    if (this.reopenScheduled) return
    this.reopenScheduled = true
    queueMicrotask(() => {
      this.reopenScheduled = false
      if (this.readyState !== 3) this.reopen()
    })
  }

  /** Opens a stream for the wanted rooms from their last positions; the previous one ends. */
  private reopen (): void {
    this.stream?.close()
    this.rooms = [...this.wanted]
    const url = new URL(this.opts.transport === 'sse' ? 'sse' : 'stream', this.base)
    if (this.rooms.length > 0) url.searchParams.set('rooms', this.rooms.join(','))
    if (this.clientId !== undefined && this.token === undefined) url.searchParams.set('clientId', this.clientId)
    if (this.token !== undefined && this.opts.transport === 'sse') url.searchParams.set('token', this.token)
    const lastEventId = this.rooms.filter(r => this.positions.has(r)).map(r => `${r}:${this.positions.get(r) as string}`).join(',')
    if (lastEventId !== '') url.searchParams.set('lastEventId', lastEventId)
    const open = this.opts.transport === 'sse' ? openSse : openNdjson
    const stream: EventStream = open(url.toString(), this.headers(), e => this.onEvent(e), (status, body) => {
      if (this.stream !== stream || this.readyState === 3) return
      this.stream = null
      if ((status === 400 || status === 403) && this.readyState === 1 && this.joins.size > 0) return this.refuseJoins(body)
      let code = 1006
      let reason = `the ${this.opts.transport} ended`
      if (status !== 200 && status !== 0) {
        code = status === 401 || status === 403 ? 1008 : 1013
        try { reason = String((JSON.parse(body) as JsonObject).message) } catch {}
      }
      this.close(code, reason)
    })
    this.stream = stream
  }

  /** A stream refused for the rooms just joined (a room outside the token's claim): those joins fail, the others go on. */
  private refuseJoins (body: string): void {
    let error: JsonObject = { code: 'forbidden', message: 'the stream with the new rooms was refused' }
    try { error = JSON.parse(body) as JsonObject } catch {}
    for (const [room, id] of this.joins) {
      this.wanted = this.wanted.filter(r => r !== room)
      this.positions.delete(room)
      this.deliver({ type: 'error', id, code: error.code, message: error.message })
    }
    this.joins.clear()
    this.reopen()
  }

  private onEvent (e: StreamEvent): void {
    this.track(e.id)
    const data = e.data
    switch (e.event) {
      case 'welcome':
        if (this.readyState !== 0) return // a reopened stream: the client already has its welcome
        this.clientId = String(data.clientId)
        this.readyState = 1
        this.onopen?.({})
        return this.deliver(data)
      case 'joined':
      case 'reset': {
        const room = String(data.room)
        const id = this.joins.get(room)
        this.joins.delete(room)
        // a room carried over to a reopened stream gets its `joined` too, without an id: the client
        // applies it as a rejoin (state, members, what it missed meanwhile, a reset), dropping repeats by offset
        return this.deliver(id !== undefined ? { ...data, type: 'joined', id } : { ...data, type: 'joined' })
      }
      case 'close':
        return this.close(typeof data.code === 'number' ? data.code : 1006, String(data.reason ?? data.message ?? ''))
      case 'error':
        if (typeof data.room === 'string' && this.joins.has(data.room)) {
          const id = this.joins.get(data.room) as string
          this.joins.delete(data.room)
          this.wanted = this.wanted.filter(r => r !== data.room)
          return this.deliver({ ...data, type: 'error', id })
        }
        return this.deliver({ ...data, type: 'error' })
      default:
        return this.deliver(data)
    }
  }

  /** Remembers each room's position from an event id (`room:epoch:offset,...`). */
  private track (id: string): void {
    if (id === '') return
    for (const entry of id.split(',')) {
      const last = entry.lastIndexOf(':')
      const mid = entry.lastIndexOf(':', last - 1)
      if (mid > 0) this.positions.set(entry.slice(0, mid), entry.slice(mid + 1))
    }
  }
}
