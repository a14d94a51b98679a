// Helpers for the Pusher protocol tests: the REAL pusher-js (its Node build), the
// REAL `pusher` server SDK and laravel-echo, pointed at a server built by helper.ts.
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createRequire } from 'node:module'
import { WebSocket } from 'ws'
import type PusherServer from 'pusher'
import type { TestContext } from './helper.js'

const require = createRequire(import.meta.url)
/** pusher-js's Node build (encryption included): CommonJS, loaded as pusher-js's own docs load it in Node. */
export const PusherJs = require('pusher-js') as new (key: string, opts: Record<string, unknown>) => PusherClient
if (process.env.PUSHER_DEBUG) (PusherJs as unknown as { logToConsole: boolean }).logToConsole = true
export const Sdk = require('pusher') as typeof PusherServer

export const APP = { id: 'app-1', key: 'app-key', secret: 'app-secret' }
export const APP_ENV = { PUSHER_APP_ID: APP.id, PUSHER_APP_KEY: APP.key, PUSHER_APP_SECRET: APP.secret }

/** The slice of pusher-js's API the tests use (its own .d.ts does not type the CommonJS export). */
export interface PusherClient {
  connection: { state: string, socket_id: string, bind (ev: string, fn: (x: any) => void): void }
  subscribe (channel: string): PusherChannel
  unsubscribe (channel: string): void
  channel (name: string): PusherChannel
  signin (): void
  user: { bind (ev: string, fn: (data: any) => void): void, signinDonePromise: Promise<void> | null }
  disconnect (): void
}
export interface PusherChannel {
  name: string
  subscribed: boolean
  members?: { count: number, me: { id: string, info: any } | null, members: Record<string, any>, each (fn: (m: { id: string, info: any }) => void): void }
  bind (ev: string, fn: (data: any, meta?: any) => void): void
  trigger (ev: string, data: unknown): boolean
}

export function sdkFor (port: number, app = APP, extra: Record<string, unknown> = {}): PusherServer {
  return new Sdk({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(port), useTLS: false, ...extra })
}

/**
 * A pusher-js client to the test server whose channel and user authorization
 * are the SDK's authorizeChannel / authenticateUser output (what an app's auth
 * endpoint returns), through pusher-js's customHandler hooks.
 */
export function pusherClient (t: TestContext, port: number, opts: { sdk?: PusherServer, presence?: (channel: string) => { user_id: string | number, user_info?: unknown } | undefined, user?: { id: string, user_info?: unknown }, key?: string, extra?: Record<string, unknown> } = {}): PusherClient {
  const sdk = opts.sdk ?? sdkFor(port)
  const client = new PusherJs(opts.key ?? APP.key, {
    cluster: '',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    channelAuthorization: {
      customHandler: ({ socketId, channelName }: { socketId: string, channelName: string }, cb: (err: Error | null, auth: unknown) => void) => {
        const presence = channelName.startsWith('presence-') ? opts.presence?.(channelName) : undefined
        cb(null, presence ? sdk.authorizeChannel(socketId, channelName, presence as PusherServer.PresenceChannelData) : sdk.authorizeChannel(socketId, channelName))
      }
    },
    userAuthentication: {
      customHandler: ({ socketId }: { socketId: string }, cb: (err: Error | null, auth: unknown) => void) => {
        cb(null, sdk.authenticateUser(socketId, opts.user ?? { id: 'nobody' }))
      }
    },
    ...opts.extra
  })
  t.teardown(() => client.disconnect())
  return client
}

/** The next `event` of a pusher-js object; no deadline unless `timeoutMs` is given (tap's test timeout reports a hang). */
export function once<T = any> (target: { bind (ev: string, fn: (x: T, meta?: any) => void): void }, event: string, timeoutMs = Infinity): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = Number.isFinite(timeoutMs) ? setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeoutMs) : undefined
    let done = false
    target.bind(event, (x: T) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve(x)
    })
  })
}

export async function connected (client: PusherClient): Promise<void> {
  if (client.connection.state === 'connected') return
  await once(client.connection, 'connected')
}

export async function subscribed (client: PusherClient, name: string): Promise<PusherChannel> {
  const ch = client.subscribe(name)
  if (!ch.subscribed) await once(ch, 'pusher:subscription_succeeded')
  return ch
}

/** A raw protocol client: every frame it got, for what pusher-js hides (close codes, error frames). */
export class RawPusher {
  readonly frames: Array<Record<string, any>> = []
  readonly closed: Promise<{ code: number, reason: string }>
  private waiters: Array<() => void> = []

  constructor (readonly ws: WebSocket) {
    ws.on('message', data => {
      const msg = JSON.parse(data.toString())
      if (typeof msg.data === 'string') {
        try { msg.parsed = JSON.parse(msg.data) } catch {}
      }
      this.frames.push(msg)
      for (const w of this.waiters.splice(0)) w()
    })
    this.closed = new Promise(resolve => ws.on('close', (code, reason) => {
      resolve({ code, reason: reason.toString() })
      for (const w of this.waiters.splice(0)) w()
    }))
  }

  static async open (t: TestContext, port: number, path: string, headers: Record<string, string> = {}): Promise<RawPusher> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { headers })
    const raw = new RawPusher(ws)
    t.teardown(() => ws.terminate())
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    return raw
  }

  send (event: string, data: unknown, channel?: string): void {
    this.ws.send(JSON.stringify({ event, data, ...(channel === undefined ? {} : { channel }) }))
  }

  /** The first frame (from `from` on) that matches; fails when the socket closes first, no deadline unless `timeoutMs` is given. */
  async next (match: (f: Record<string, any>) => boolean, what: string, from = 0, timeoutMs = Infinity): Promise<Record<string, any>> {
    const until = Date.now() + timeoutMs
    for (;;) {
      const found = this.frames.slice(from).find(match)
      if (found) return found
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`closed before ${what}`)
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.frames).slice(0, 800)}`)
      await new Promise<void>(resolve => {
        const left = until - Date.now()
        const timer = Number.isFinite(left) ? setTimeout(resolve, left) : undefined
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  async established (): Promise<string> {
    const f = await this.next(f => f.event === 'pusher:connection_established', 'connection_established')
    return f.parsed.socket_id
  }
}

/**
 * pusher-js closes its socket again after the server closed it with a
 * 4001-4099 code ("refused": 4009 terminate_connections); its Node transport
 * (faye-websocket) then arms a 30 s timer on the already closed socket that
 * nothing clears, which would keep the test process alive 30 s. Call before the
 * refusal; the returned function, after it, clears that timer.
 */
export function holdFayeSocket (client: PusherClient): () => void {
  const socket = (client as unknown as { connection: { connection?: { transport?: { socket?: { _closeTimer?: NodeJS.Timeout } } } } }).connection.connection?.transport?.socket
  return () => clearTimeout(socket?._closeTimer)
}

/** A webhook receiver: a real HTTP server; each request's validity is judged by the SDK's own webhook check. */
export async function receiver (t: { teardown (fn: () => unknown): void }) {
  const batches: Array<{ valid: boolean, events: Array<Record<string, unknown>>, headers: Record<string, string | string[] | undefined> }> = []
  let failFirst = 0
  let refused = 0
  const server = createServer((req: IncomingMessage, res) => {
    let body = ''
    req.on('data', c => { body += c })
    req.on('end', () => {
      if (failFirst > 0) {
        failFirst--
        refused++
        res.statusCode = 503
        res.end()
        return
      }
      const hook = new Sdk({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1' }).webhook({ headers: req.headers as Record<string, string>, rawBody: body })
      batches.push({ valid: hook.isValid(), events: hook.getEvents() as unknown as Array<Record<string, unknown>>, headers: req.headers })
      res.end()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    batches,
    failNext (n: number) { failFirst = n },
    /** Requests answered 503 (by failNext) so far. */
    refused: () => refused,
    events: () => batches.flatMap(b => b.events.map(e => `${e.name}:${e.channel}${e.user_id === undefined ? '' : `:${e.user_id}`}`))
  }
}

/** A RequestError of the server SDK, as a backend sees a refused call: its status and body (throws when the call was accepted). */
export async function refusal (p: Promise<unknown>): Promise<{ status: number, body: string }> {
  try {
    await p
  } catch (err) {
    const e = err as { status?: number, body?: string }
    return { status: e.status ?? 0, body: e.body ?? '' }
  }
  throw new Error('the call was accepted')
}
