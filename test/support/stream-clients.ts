import http from 'node:http'
import { EventSource } from 'eventsource'

/** One event a stream client received: its name, its id and its data (parsed). */
export interface ReceivedEvent { event: string, id: string, data: any }

/** Events in arrival order, and waits for the next one that matches (never a clock: tap's timeout ends a wait that never ends). */
export class EventLog {
  readonly events: ReceivedEvent[] = []
  private read = 0
  private waiters: Array<() => void> = []

  push (e: ReceivedEvent): void {
    this.events.push(e)
    for (const w of this.waiters.splice(0)) w()
  }

  /** The next event (after those already returned by `next`) named `event` and matching `match`; the ones skipped are passed. */
  async next (event: string, match: (e: ReceivedEvent) => boolean = () => true): Promise<ReceivedEvent> {
    for (;;) {
      while (this.read < this.events.length) {
        const e = this.events[this.read++]
        if (e.event === event && match(e)) return e
      }
      await new Promise<void>(resolve => this.waiters.push(resolve))
    }
  }

  /** Resolves when `check` holds over every event received so far. */
  async until (check: (events: ReceivedEvent[]) => boolean): Promise<void> {
    while (!check(this.events)) await new Promise<void>(resolve => this.waiters.push(resolve))
  }

  /** Every room message received, from `room_message` events and from the `missed` of `joined`/`reset` events, in order. */
  roomMessages (room: string): any[] {
    const out: any[] = []
    for (const e of this.events) {
      if (e.event === 'room_message' && e.data.room === room) out.push(e.data)
      if ((e.event === 'joined' || e.event === 'reset') && e.data.room === room) out.push(...e.data.missed)
    }
    return out
  }
}

const NAMES = ['welcome', 'joined', 'reset', 'room_message', 'message', 'state', 'presence', 'history_cleared', 'server_shutdown', 'disconnected', 'token_expiring', 'close', 'stream_error']

/** The `eventsource` package's EventSource (what a Node app would use), recording every named event; it reconnects by itself with Last-Event-ID. */
export class SseClient {
  readonly log = new EventLog()
  readonly source: EventSource
  /** Times the connection opened (a reconnect opens it again). */
  opens = 0
  errors: Array<{ code?: number, message?: string }> = []

  constructor (url: string, opts: { headers?: Record<string, string> } = {}) {
    const headers = opts.headers ?? {}
    this.source = new EventSource(url, {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, ...headers } })
    })
    this.source.addEventListener('open', () => { this.opens++ })
    this.source.addEventListener('error', e => { this.errors.push({ code: e.code, message: e.message }) })
    for (const name of NAMES) {
      this.source.addEventListener(name, e => this.log.push({ event: name, id: e.lastEventId, data: JSON.parse(e.data) }))
    }
  }

  close (): void {
    this.source.close()
  }
}

/** A plain `http.get` reader of GET /stream (NDJSON) or GET /sse (parsed here): the status, the headers, the events, the end. */
export class StreamReader {
  readonly log = new EventLog()
  status = 0
  headers: http.IncomingHttpHeaders = {}
  /** The body of a refused request (its JSON), or what came before the end. */
  body = ''
  readonly ended: Promise<void>
  readonly response: Promise<void>
  private request: http.ClientRequest | null = null

  constructor (url: string, opts: { headers?: Record<string, string>, localAddress?: string } = {}) {
    let ended!: () => void
    this.ended = new Promise(resolve => { ended = resolve })
    this.response = new Promise((resolve, reject) => {
      this.request = http.get(url, { headers: opts.headers, localAddress: opts.localAddress, agent: false }, res => {
        this.status = res.statusCode ?? 0
        this.headers = res.headers
        const sse = String(res.headers['content-type']).startsWith('text/event-stream')
        let buffer = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          if (this.status !== 200) {
            this.body += chunk
            return
          }
          buffer += chunk
          const events = sse ? parseSse(buffer) : parseNdjson(buffer)
          buffer = events.rest
          for (const e of events.events) this.log.push(e)
        })
        res.on('close', () => ended())
        resolve()
      })
      this.request.on('error', err => {
        ended()
        reject(err)
      })
    })
  }

  /** The refused request's body, parsed, once it ended. */
  async refusal (): Promise<any> {
    await this.response
    await this.ended
    return JSON.parse(this.body)
  }

  close (): void {
    this.request?.destroy()
  }
}

/** NDJSON lines into events; empty lines are keepalives. */
export function parseNdjson (text: string): { events: ReceivedEvent[], rest: string } {
  const lines = text.split('\n')
  const rest = lines.pop() ?? ''
  const events: ReceivedEvent[] = []
  for (const line of lines) {
    if (line === '') continue
    const e = JSON.parse(line) as ReceivedEvent
    events.push(e)
  }
  return { events, rest }
}

/** text/event-stream into events (comments skipped); `keepalives` counts the comment lines. */
export function parseSse (text: string): { events: ReceivedEvent[], rest: string, keepalives: number } {
  const blocks = text.split('\n\n')
  const rest = blocks.pop() ?? ''
  const events: ReceivedEvent[] = []
  let keepalives = 0
  for (const block of blocks) {
    let event = 'message'
    let id = ''
    const data: string[] = []
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) keepalives++
      else if (line.startsWith('event: ')) event = line.slice(7)
      else if (line.startsWith('id: ')) id = line.slice(4)
      else if (line.startsWith('data: ')) data.push(line.slice(6))
    }
    if (data.length > 0) events.push({ event, id, data: JSON.parse(data.join('\n')) })
  }
  return { events, rest, keepalives }
}

/** What `httpFetch` reports of the response it made: the response itself (to pause it) and every chunk of its body. */
export interface HttpFetchHooks {
  response? (res: http.IncomingMessage): void
  chunk? (text: string): void
}

/**
 * A `fetch` for the `eventsource` package made over node:http, so that the
 * test picks the source address (the client key in open mode) and can stop
 * reading (pausing the response holds it paused: the body below is pushed
 * from its `data` events, never pulled).
 */
export function httpFetch (opts: { localAddress?: string, headers?: Record<string, string> } & HttpFetchHooks = {}): typeof fetch {
  return async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    const headers: Record<string, string> = { ...opts.headers }
    new Headers(init?.headers).forEach((value, name) => { headers[name] = value })
    return await new Promise<Response>((resolve, reject) => {
      const request = http.get(url, { headers, localAddress: opts.localAddress, agent: false }, res => {
        opts.response?.(res)
        const body = new ReadableStream<Uint8Array>({
          start (controller) {
            res.on('data', (chunk: Buffer) => {
              opts.chunk?.(chunk.toString())
              controller.enqueue(new Uint8Array(chunk))
            })
            res.on('end', () => controller.close())
            res.on('error', err => controller.error(err))
            res.on('close', () => { if (!res.complete) controller.error(new Error('the response was cut')) })
          },
          cancel () { res.destroy() }
        })
        const responseHeaders = new Headers()
        for (const [name, value] of Object.entries(res.headers)) if (typeof value === 'string') responseHeaders.set(name, value)
        resolve(new Response(body, { status: res.statusCode, headers: responseHeaders }))
      })
      request.on('error', reject)
      init?.signal?.addEventListener('abort', () => request.destroy(Object.assign(new Error('aborted'), { name: 'AbortError' })), { once: true })
    })
  }
}

/** Counts the keepalive lines of a stream as its chunks arrive (SSE: a `:` comment line; NDJSON: an empty line). */
export class KeepaliveCounter {
  count = 0
  private rest = ''

  constructor (private readonly format: 'sse' | 'ndjson') {}

  feed (text: string): void {
    const lines = (this.rest + text).split('\n')
    this.rest = lines.pop() ?? ''
    // an NDJSON event is never an empty line; an SSE field line never starts with ':'
    for (const line of lines) if (this.format === 'sse' ? line.startsWith(':') : line === '') this.count++
  }
}
