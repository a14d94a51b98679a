// The doors of the guarantee matrix (test/guarantees.*.test.ts): one descriptor
// per protocol a client may connect through. A case of the matrix only uses
// what a descriptor offers (open a connection, make an acknowledged write and
// read it back, its hostile frames, what its refusal and its close codes look
// like), so a new protocol is covered by adding one descriptor here. A
// receive-only door (SSE, HTTP streaming) reads a stream and writes over the
// HTTP API: its hostile frames are HTTP bodies, its refusals HTTP answers.
import WebSocket from 'ws'
import type { Socket } from 'node:net'
import http from 'node:http'
import { createHmac } from 'node:crypto'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { APP, APP_ENV, sdkFor } from './pusher-clients.js'
import { yEditor } from './yjs-editors.js'
import { waitFor, type TestContext } from './helper.js'
import { ADMIN_TOKEN, documentView, type ServerTarget } from './observation.js'
import { KeepaliveCounter, httpFetch, parseNdjson } from './stream-clients.js'
import { EventSource } from 'eventsource'

export type { ServerTarget } from './observation.js'

export type DoorName = 'switchboard' | 'pusher' | 'y-websocket' | 'hocuspocus' | 'sse' | 'stream'

/** The cases of the matrix: a to m by their letter in issue 26's list (deliverable 5), n to r the preamble and resume every door shares. */
export const CASES = {
  badInput: 'a. crash-proof bad input',
  size: 'b. frame and field size',
  rate: 'c. message rate',
  sendBuffer: 'd. send-buffer cap',
  deadPeer: 'e. dead peer',
  tokenExpiry: 'f. token expiry',
  readOnly: 'g. read-only never writes',
  shutdown: 'h. graceful shutdown, nothing acked lost',
  admin: 'i. admin visibility and metrics',
  storeFailure: 'j. store failure',
  clusterCaps: 'k. cluster-wide caps',
  order: 'l. per-channel order across instances',
  isolated: 'm. a write that cannot cross instances is refused',
  authRefused: 'n. a connection without a valid token is refused',
  heartbeat: 'o. an idle connection hears the heartbeat',
  originRefused: 'p. an Origin that is not allowed is refused',
  caps: 'q. connection caps, total and per client',
  resume: 'r. resume after a restart: no gap, no duplicate'
} as const
export type CaseName = keyof typeof CASES

/** How long any one wait of the matrix lasts before it fails (generous: the suite runs under CPU hogs). */
export const WAIT_MS = 15000

export interface Closed { code: number, reason: string }

/** A protocol's refusal of a frame, as the client sees it. */
export interface Refusal {
  /** switchboard: the error `code`; pusher: `data.code`; Yjs: 'permission_denied'. */
  code: string | number | null | undefined
  message: string
  /** switchboard: the `limit` field of the error. */
  limit?: number
  /** hocuspocus: the document the refusal is for. */
  doc?: string
  /** A receive-only door's HTTP write: the status it was answered with. */
  status?: number
}

/** What the server answered to a frame: its refusal, or nothing before the probe's reply (refusal null), or a close. */
export interface Answer {
  refusal: Refusal | null
  closed: Closed | null
  /** Everything received after the frame was sent. */
  frames: unknown[]
}

export interface OpenOptions {
  /** A Switchboard token (JWT or admin token): `?token=` on the upgrade, or the Hocuspocus Auth message. */
  token?: string
  /** Source address (127.x.y.z), the client key in open mode [a fresh one per connection]. */
  address?: string
  /** The room, channel (`private-<resource>`) or document the connection works on [a fresh name]. */
  resource?: string
  /** Join the room / subscribe the channel / wait for the document's sync once open [true]. */
  setUp?: boolean
  /** The Origin header of the upgrade or stream request [none]. */
  origin?: string
  /** A stream's resume position (`?lastEventId=`) [none]. */
  lastEventId?: string
}

let hosts = 0
/**
 * A loopback address (127.0.x.y, x from 1: the other tests use 127.0.0.x) no
 * other connection of this process used: a distinct client key in open mode.
 */
export function freshAddress (): string {
  const n = hosts++
  return `127.0.${1 + Math.floor(n / 250)}.${(n % 250) + 1}`
}

let names = 0
/** A room / channel / document name no other test of this process used. */
export function freshName (prefix = 'm'): string {
  names++
  return `${prefix}-${process.pid}-${names}`
}

/** `[[[…]]]` nested `levels` deep, as JSON text (60 KB for 30,000 levels). */
export function deepJson (levels = 30000): string {
  return '['.repeat(levels) + ']'.repeat(levels)
}

/**
 * One connection through a door: every frame it received (decoded), its
 * close, and the door's operations on it. A WebSocket door's frames are what
 * its socket received; a receive-only door's (SSE, HTTP streaming) are its
 * stream's events and the answers to its HTTP writes, in arrival order.
 */
export abstract class DoorConnection {
  readonly frames: any[] = []
  closedWith: Closed | null = null
  readonly closed: Promise<Closed>
  private waiters: Array<() => void> = []
  private resolveClosed!: (closed: Closed) => void

  constructor (readonly door: Door, readonly server: ServerTarget, readonly address: string, readonly resource: string, readonly token?: string) {
    this.closed = new Promise(resolve => { this.resolveClosed = resolve })
  }

  /** Records a frame received and wakes the waits. */
  protected received (frame: unknown): void {
    this.frames.push(frame)
    this.wake()
  }

  /** Records the close (once) and wakes the waits. */
  protected ended (closed: Closed): void {
    if (this.closedWith) return
    this.closedWith = closed
    this.resolveClosed(closed)
    this.wake()
  }

  private wake (): void {
    for (const w of this.waiters.splice(0)) w()
  }

  /** This door's refusal, if the frame is one. */
  abstract refusalOf (frame: any): Refusal | null
  /** Sends a request whose reply shows every earlier frame was handled; returns a matcher of that reply. */
  protected abstract sendProbe (): (frame: any) => boolean
  /** An acknowledged write of `tag` to the resource; throws (with what the server said) when it is not acknowledged. */
  abstract write (tag: string): Promise<void>
  /** The tags the server holds for the resource (read back), or null for a door that stores nothing. */
  abstract stored (): Promise<string[] | null>
  /** Whether the connection is open. */
  abstract get open (): boolean
  /** Sends raw data the way this door's client sends what it writes (a WebSocket frame; a receive-only door's HTTP write). */
  abstract send (data: string | Uint8Array, binary?: boolean): void
  /** Stops reading: the kernel buffers fill, then the server's send buffer (a WebSocket client answers no ping either). */
  abstract stopReading (): void
  abstract resumeReading (): void
  /** Heartbeats heard so far (WebSocket pings; a stream's keepalive lines). */
  abstract get heartbeats (): number
  /** Ends the connection from the client's side; resolves once closed. */
  abstract close (): Promise<void>

  /** Sends a hostile or oversized frame (a receive-only door sends it to the HTTP write it names). */
  deliver (frame: { data: string | Uint8Array, binary: boolean }): void {
    this.send(frame.data, frame.binary)
  }

  /** The first frame from index `from` on that matches; rejects on close or after `timeoutMs`. */
  async next (match: (frame: any) => boolean, what: string, from = 0, timeoutMs = WAIT_MS): Promise<any> {
    const until = Date.now() + timeoutMs
    for (;;) {
      for (let i = from; i < this.frames.length; i++) if (match(this.frames[i])) return this.frames[i]
      if (this.closedWith) throw new Error(`${this.door.name}: closed (${this.closedWith.code} ${this.closedWith.reason}) while waiting for ${what}`)
      const left = until - Date.now()
      if (left <= 0) throw new Error(`${this.door.name}: timed out waiting for ${what}; last frames ${short(this.frames.slice(-3))}`)
      await this.sleepUntilWoken(left)
    }
  }

  /** Resolves on the next frame or close, or after `ms`. */
  protected async sleepUntilWoken (ms: number): Promise<void> {
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, ms)
      this.waiters.push(() => { clearTimeout(timer); resolve() })
    })
  }

  /** Resolves once `condition` holds (checked on every frame and at the close); rejects on close or after `timeoutMs`. */
  async waitUntil (condition: () => boolean, what: string, timeoutMs = WAIT_MS): Promise<void> {
    const until = Date.now() + timeoutMs
    for (;;) {
      if (condition()) return
      if (this.closedWith) throw new Error(`${this.door.name}: closed (${this.closedWith.code} ${this.closedWith.reason}) while waiting for ${what}`)
      const left = until - Date.now()
      if (left <= 0) throw new Error(`${this.door.name}: timed out waiting for ${what}`)
      await this.sleepUntilWoken(left)
    }
  }

  /** A round trip: resolves once the server answered a request sent now (so it handled every frame before it). */
  async roundTrip (timeoutMs = WAIT_MS): Promise<void> {
    const from = this.frames.length
    const isReply = this.sendProbe()
    await this.next(isReply, 'the reply to a probe', from, timeoutMs)
  }

  /** Resolves once the server answered on this socket: it is open and served. */
  async alive (): Promise<void> {
    await this.roundTrip()
  }

  /**
   * Sends what `send` sends, then a probe, and reports the answer: this door's
   * refusal if one came before the probe's reply, or null when the probe's
   * reply came first (the frame was taken without a refusal), or the close.
   */
  async answerTo (send: () => void, timeoutMs = WAIT_MS): Promise<Answer> {
    const from = this.frames.length
    send()
    const isReply = this.sendProbe()
    const until = Date.now() + timeoutMs
    for (;;) {
      for (let i = from; i < this.frames.length; i++) {
        const refusal = this.refusalOf(this.frames[i])
        if (refusal) return { refusal, closed: null, frames: this.frames.slice(from) }
        if (isReply(this.frames[i])) return { refusal: null, closed: null, frames: this.frames.slice(from) }
      }
      if (this.closedWith) return { refusal: null, closed: this.closedWith, frames: this.frames.slice(from) }
      const left = until - Date.now()
      if (left <= 0) throw new Error(`${this.door.name}: no refusal, reply or close within ${timeoutMs} ms; got ${short(this.frames.slice(from))}`)
      await this.sleepUntilWoken(left)
    }
  }

  /** The refusals received from index `from` on. */
  refusalsSince (from = 0): Refusal[] {
    return this.frames.slice(from).map(f => this.refusalOf(f)).filter((r): r is Refusal => r !== null)
  }
}

/** A connection over a WebSocket: every frame its socket received, decoded; its TCP socket is paused to stop reading. */
export abstract class WebSocketConnection extends DoorConnection {
  private pingsHeard = 0

  constructor (door: Door, readonly ws: WebSocket, server: ServerTarget, address: string, resource: string, token?: string) {
    super(door, server, address, resource, token)
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let frame: unknown
      try {
        frame = this.decode(data, isBinary)
      } catch (err) {
        frame = { undecodable: (err as Error).message, bytes: data.length }
      }
      this.received(frame)
    })
    ws.on('ping', () => { this.pingsHeard++ })
    ws.on('error', () => {})
    ws.once('close', (code: number, reason: Buffer) => this.ended({ code, reason: reason.toString() }))
  }

  protected abstract decode (data: Buffer, isBinary: boolean): unknown

  get open (): boolean {
    return this.ws.readyState === WebSocket.OPEN
  }

  get heartbeats (): number {
    return this.pingsHeard
  }

  /** The TCP socket under the WebSocket: pause it and the client neither reads nor answers pings. */
  get tcp (): Socket {
    return (this.ws as unknown as { _socket: Socket })._socket
  }

  stopReading (): void {
    this.tcp.pause()
  }

  resumeReading (): void {
    this.tcp.resume()
  }

  send (data: string | Uint8Array, binary = typeof data !== 'string'): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data, { binary })
  }

  async close (): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return
    if (this.tcp?.isPaused()) this.tcp.resume()
    this.ws.terminate()
    await this.closed
  }
}

function short (frames: unknown[]): string {
  return JSON.stringify(frames, (_k, v) => v instanceof Uint8Array ? `<${v.length} bytes>` : v).slice(0, 600)
}

/** Starts a WebSocket from `address`: the caller wraps it (so no frame is missed) and waits for `upgraded`. */
function startSocket (url: string, address: string, origin?: string): WebSocket {
  return new WebSocket(url, { localAddress: address, ...(origin === undefined ? {} : { origin }) })
}

/** Resolves once the socket is open; rejects with the HTTP status (`statusCode`) when the upgrade is refused. */
async function upgraded (ws: WebSocket, url: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('unexpected-response', (_req, res) => {
      reject(Object.assign(new Error(`upgrade of ${url.replace(/token=[^&]+/, 'token=…')} refused with ${res.statusCode}`), { statusCode: res.statusCode }))
      res.resume()
    })
    ws.once('error', reject)
  })
}

async function httpJson (server: ServerTarget, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number, body: any }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: res.status, body: parsed }
}

// ---------------------------------------------------------------- switchboard

/** The tags of a room's history (GET /api/rooms/:room/history; none for a room never used). */
async function roomHistoryTags (server: ServerTarget, room: string, token?: string): Promise<string[]> {
  const res = await httpJson(server, 'GET', `/api/rooms/${room}/history?limit=1000`, undefined, token)
  if (res.status === 404) return []
  if (res.status !== 200) throw new Error(`GET /api/rooms/${room}/history answered ${res.status}: ${JSON.stringify(res.body)}`)
  return (res.body.messages as Array<{ data?: { tag?: string } }>).map(m => m.data?.tag ?? JSON.stringify(m.data))
}

/** A /ws connection: native JSON frames; `resource` is a room it joined. */
export class SwitchboardConnection extends WebSocketConnection {
  welcome: any = null
  private ids = 0

  protected decode (data: Buffer): unknown {
    return JSON.parse(data.toString())
  }

  refusalOf (frame: any): Refusal | null {
    if (frame?.type !== 'error') return null
    return { code: frame.code, message: String(frame.message ?? ''), ...(frame.limit === undefined ? {} : { limit: frame.limit }) }
  }

  protected sendProbe (): (frame: any) => boolean {
    const id = `probe-${++this.ids}`
    this.send(JSON.stringify({ type: 'ping', id }))
    return f => f?.type === 'pong' && f.id === id
  }

  /** Sends a request with a fresh id; resolves with the reply carrying it (ack, joined or error). */
  async request (msg: Record<string, unknown>, timeoutMs = WAIT_MS): Promise<any> {
    const id = `r-${++this.ids}`
    const from = this.frames.length
    this.send(JSON.stringify({ ...msg, id }))
    return await this.next(f => f?.id === id, `the reply to ${String(msg.type)}`, from, timeoutMs)
  }

  async write (tag: string): Promise<void> {
    const reply = await this.request({ type: 'publish', room: this.resource, data: { tag } })
    if (reply.type !== 'ack') throw new Error(`switchboard: publish not acknowledged: ${JSON.stringify(reply)}`)
  }

  async stored (): Promise<string[]> {
    return await roomHistoryTags(this.server, this.resource, this.token)
  }
}

// --------------------------------------------------------------------- pusher

/** A Pusher protocol 7 connection; `resource` names its private channel `private-<resource>`. */
export class PusherConnection extends WebSocketConnection {
  socketId = ''
  /** Pings sent and pongs received: the n-th pong answers the n-th ping. */
  private pings = 0
  private pongs = 0

  get channel (): string {
    return `private-${this.resource}`
  }

  protected decode (data: Buffer, isBinary: boolean): unknown {
    if (isBinary) return { binary: data.length }
    const msg = JSON.parse(data.toString())
    if (typeof msg.data === 'string') {
      try { msg.parsed = JSON.parse(msg.data) } catch {}
    }
    if (msg.event === 'pusher:pong') msg.ordinal = ++this.pongs
    return msg
  }

  refusalOf (frame: any): Refusal | null {
    if (frame?.event !== 'pusher:error') return null
    const data = frame.parsed ?? frame.data ?? {}
    return { code: data.code, message: String(data.message ?? '') }
  }

  protected sendProbe (): (frame: any) => boolean {
    this.sendEvent('pusher:ping', {})
    const n = this.pings
    return f => f?.event === 'pusher:pong' && f.ordinal === n
  }

  sendEvent (event: string, data: unknown, channel?: string): void {
    if (event === 'pusher:ping' && this.open) this.pings++
    this.send(JSON.stringify({ event, data, ...(channel === undefined ? {} : { channel }) }))
  }

  /** `<key>:<HMAC-SHA256 of socket_id:channel[:channel_data]>`, as the app's auth endpoint signs it. */
  signature (channel: string, channelData?: string): string {
    const text = channelData === undefined ? `${this.socketId}:${channel}` : `${this.socketId}:${channel}:${channelData}`
    return `${APP.key}:${createHmac('sha256', APP.secret).update(text).digest('hex')}`
  }

  /** Subscribes (signed for private- and presence- channels); resolves with subscription_succeeded or subscription_error. */
  async subscribe (channel: string, channelData?: string): Promise<any> {
    const from = this.frames.length
    const signed = channel.startsWith('private-') || channel.startsWith('presence-')
    this.sendEvent('pusher:subscribe', { channel, ...(signed ? { auth: this.signature(channel, channelData) } : {}), ...(channelData === undefined ? {} : { channel_data: channelData }) })
    return await this.next(f => f?.channel === channel && (f.event === 'pusher_internal:subscription_succeeded' || f.event === 'pusher:subscription_error'), `the answer to subscribing ${channel}`, from)
  }

  /** A trigger through the signed HTTP API (the `pusher` SDK): 200 is the write's acknowledgement, its arrival here the read-back. */
  async write (tag: string): Promise<void> {
    const from = this.frames.length
    await sdkFor(this.server.port).trigger(this.channel, 'matrix-write', { tag })
    await this.next(f => f?.event === 'matrix-write' && f.channel === this.channel && f.parsed?.tag === tag, `the triggered event ${tag}`, from)
  }

  async stored (): Promise<null> {
    return null
  }
}

// ----------------------------------------------------------------------- Yjs

/** Yjs message types as y-websocket numbers them (Hocuspocus uses the same after the document name). */
export const YType = { sync: 0, awareness: 1, auth: 2, queryAwareness: 3, stateless: 5, broadcastStateless: 6, close: 7, syncStatus: 8 } as const
export const SyncSub = { step1: 0, step2: 1, update: 2 } as const

/** A y-websocket-level sync message: type 0, the sub-type, the payload as a varUint8Array. */
export function syncMessage (sub: number, payload: Uint8Array): Uint8Array {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, YType.sync)
  encoding.writeVarUint(enc, sub)
  encoding.writeVarUint8Array(enc, payload)
  return encoding.toUint8Array(enc)
}

/** An awareness message for one client whose state is the JSON text `stateJson`. */
export function awarenessMessage (clientId: number, clock: number, stateJson: string): Uint8Array {
  const update = encoding.createEncoder()
  encoding.writeVarUint(update, 1)
  encoding.writeVarUint(update, clientId)
  encoding.writeVarUint(update, clock)
  encoding.writeVarString(update, stateJson)
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, YType.awareness)
  encoding.writeVarUint8Array(enc, encoding.toUint8Array(update))
  return encoding.toUint8Array(enc)
}

/** An empty state vector: a sync step 1 with it asks for the whole document. */
const EMPTY_STATE_VECTOR = Uint8Array.of(0)

/** The `log` array of a document held in one Yjs update. */
export function logOf (update: Uint8Array): string[] {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  const log = doc.getArray<string>('log').toArray()
  doc.destroy()
  return log
}

interface YFrame { doc?: string, type: number, sub?: number, payload?: Uint8Array, reason?: string, value?: number, text?: string, ordinal?: number }

/** What y-websocket and Hocuspocus connections share: a local Y.Doc whose edits become updates, and the sync messages. */
export abstract class YjsConnection extends WebSocketConnection {
  /** The connection's own document: `write` pushes to its `log` array and sends the change. */
  readonly local = new Y.Doc()
  private awarenessClock = 0
  /** Sync steps 1 sent and steps 2 received for the document: the n-th step 2 answers the n-th step 1. */
  private steps1 = 0
  private steps2 = 0

  /** Sends a y-websocket-level message of the document (Hocuspocus prefixes its name). */
  sendMessage (message: Uint8Array): void {
    if (!this.open) return
    if (message[0] === YType.sync && message[1] === SyncSub.step1) this.steps1++
    this.sendFramed(message)
  }

  protected abstract sendFramed (message: Uint8Array): void

  /** Numbers the server's steps 2 of the document as they arrive. */
  protected numbered (frame: YFrame): YFrame {
    if (this.ours(frame) && frame.type === YType.sync && frame.sub === SyncSub.step2) frame.ordinal = ++this.steps2
    return frame
  }
  /** Whether a decoded frame belongs to this connection's document. */
  protected abstract ours (frame: YFrame): boolean

  /** The update that pushes `tag` to the `log` array of the local document. */
  updateFor (tag: string): Uint8Array {
    const before = Y.encodeStateVector(this.local)
    this.local.getArray<string>('log').push([tag])
    return Y.encodeStateAsUpdate(this.local, before)
  }

  sendUpdate (tag: string, sub: number = SyncSub.update): void {
    this.sendMessage(syncMessage(sub, this.updateFor(tag)))
  }

  sendAwareness (stateJson: string): void {
    this.sendMessage(awarenessMessage(this.local.clientID, ++this.awarenessClock, stateJson))
  }

  protected sendProbe (): (frame: any) => boolean {
    this.sendMessage(syncMessage(SyncSub.step1, EMPTY_STATE_VECTOR))
    const n = this.steps1
    return (f: YFrame) => f.ordinal === n
  }

  /** The whole document as the server holds it: its answer (step 2) to a sync step 1 with an empty state vector. */
  async fullState (): Promise<Uint8Array> {
    const from = this.frames.length
    const isReply = this.sendProbe()
    const reply = await this.next(isReply, 'the document (sync step 2)', from)
    return reply.payload
  }

  async stored (): Promise<string[]> {
    return logOf(await this.fullState())
  }

  /** Sends an update of `tag` and reports how it was answered. */
  abstract attemptUpdate (tag: string): Promise<WriteOutcome>

  /** Decodes one y-websocket-level message (after the document name, for Hocuspocus). */
  protected decodeMessage (decoder: decoding.Decoder, frame: YFrame): YFrame {
    frame.type = decoding.readVarUint(decoder)
    if (frame.type === YType.sync) {
      frame.sub = decoding.readVarUint(decoder)
      frame.payload = decoding.readVarUint8Array(decoder)
    } else if (frame.type === YType.awareness) {
      frame.payload = decoding.readVarUint8Array(decoder)
    } else if (frame.type === YType.auth) {
      frame.sub = decoding.readVarUint(decoder)
      if (decoding.hasContent(decoder)) frame.reason = decoding.readVarString(decoder)
    } else if (frame.type === YType.stateless || frame.type === YType.close) {
      frame.text = decoding.readVarString(decoder)
    } else if (frame.type === YType.syncStatus) {
      frame.value = decoding.readVarInt(decoder)
    }
    return frame
  }
}

/** A /yjs/<doc> connection: y-websocket framing; `resource` is the document. */
export class YWebsocketConnection extends YjsConnection {
  protected sendFramed (message: Uint8Array): void {
    this.send(message, true)
  }

  protected ours (): boolean {
    return true
  }

  protected decode (data: Buffer, isBinary: boolean): unknown {
    if (!isBinary) return { type: -1, text: data.toString() }
    return this.numbered(this.decodeMessage(decoding.createDecoder(new Uint8Array(data)), { type: -1 }))
  }

  /** y-websocket's auth message "permission denied": type 2, sub 0, a reason. */
  refusalOf (frame: YFrame): Refusal | null {
    if (frame?.type !== YType.auth || frame.sub !== 0) return null
    return { code: 'permission_denied', message: frame.reason ?? '' }
  }

  /** y-websocket has no acknowledgement: the write is acknowledged once the server's copy (read back) holds it. */
  async write (tag: string): Promise<void> {
    const outcome = await this.attemptUpdate(tag)
    if (!outcome.acknowledged) throw new Error(`y-websocket: update ${tag} not acknowledged: ${outcome.message}`)
  }

  /** Refused: permission denied before the read-back; acknowledged: the read-back holds it. */
  async attemptUpdate (tag: string): Promise<WriteOutcome> {
    const answer = await this.answerTo(() => this.sendUpdate(tag))
    if (answer.refusal) return { acknowledged: false, code: answer.refusal.code, message: answer.refusal.message }
    if (answer.closed) return { acknowledged: false, code: `closed ${answer.closed.code}`, message: answer.closed.reason }
    const reply = answer.frames.find((f: any) => f.type === YType.sync && f.sub === SyncSub.step2) as YFrame
    if (logOf(reply.payload!).includes(tag)) return { acknowledged: true, message: 'in the document read back' }
    return { acknowledged: false, code: null, message: 'no refusal, and the document read back does not hold it' }
  }
}

/** A /collab connection: Hocuspocus framing (document name, then the y-websocket message); `resource` is its document. */
export class HocuspocusConnection extends YjsConnection {
  private extra = 0
  /** What the server said when it authenticated the document: 'read-write' or 'readonly'. */
  scope = ''

  protected sendFramed (message: Uint8Array): void {
    this.sendFor(this.resource, message)
  }

  /** A message of `doc` on this socket. */
  sendFor (doc: string, message: Uint8Array): void {
    const enc = encoding.createEncoder()
    encoding.writeVarString(enc, doc)
    encoding.writeUint8Array(enc, message)
    this.send(encoding.toUint8Array(enc), true)
  }

  protected ours (frame: YFrame): boolean {
    return frame.doc === this.resource
  }

  protected decode (data: Buffer, isBinary: boolean): unknown {
    if (!isBinary) return { type: -1, text: data.toString() }
    const decoder = decoding.createDecoder(new Uint8Array(data))
    const doc = decoding.readVarString(decoder)
    return this.numbered(this.decodeMessage(decoder, { doc, type: -1 }))
  }

  /** Hocuspocus's Auth permission-denied: type 2, sub 1, a reason, for one document. */
  refusalOf (frame: YFrame): Refusal | null {
    if (frame?.type !== YType.auth || frame.sub !== 1) return null
    return { code: 'permission_denied', message: frame.reason ?? '', doc: frame.doc }
  }

  /** Sends the Auth message of `doc`; resolves with the scope once authenticated, throws with the reason when denied. */
  async authenticate (doc: string, token: string | undefined): Promise<string> {
    const from = this.frames.length
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, YType.auth)
    encoding.writeVarUint(enc, 0)
    encoding.writeVarString(enc, token ?? '')
    this.sendFor(doc, encoding.toUint8Array(enc))
    const answer = await this.next((f: YFrame) => f.doc === doc && f.type === YType.auth && (f.sub === 1 || f.sub === 2), `the Auth answer for ${doc}`, from)
    if (answer.sub === 1) throw Object.assign(new Error(`hocuspocus: ${doc} denied: ${answer.reason}`), { denied: answer.reason })
    return answer.reason ?? ''
  }

  /** The socket answers: an Auth for a fresh document gets its answer (authenticated or denied), then that document is closed. */
  override async alive (): Promise<void> {
    const doc = `${this.resource}-alive-${++this.extra}`
    try {
      await this.authenticate(doc, this.token)
    } catch (err) {
      if ((err as { denied?: string }).denied === undefined) throw err
    }
    this.sendFor(doc, Uint8Array.of(YType.close))
  }

  /** Acknowledged by SyncStatus (type 8) 1, which the server sends once the update is committed. */
  async write (tag: string): Promise<void> {
    const outcome = await this.attemptUpdate(tag)
    if (!outcome.acknowledged) throw new Error(`hocuspocus: update ${tag} not acknowledged: ${outcome.message}`)
  }

  /** SyncStatus 1: acknowledged; SyncStatus 0 ("not saved") or permission denied: refused; the probe's reply first: taken without an answer. */
  async attemptUpdate (tag: string): Promise<WriteOutcome> {
    const from = this.frames.length
    this.sendUpdate(tag)
    const isReply = this.sendProbe()
    const answer = await this.next((f: YFrame) => this.refusalOf(f) !== null || (this.ours(f) && f.type === YType.syncStatus) || isReply(f), `an answer to update ${tag}`, from)
    const refusal = this.refusalOf(answer)
    if (refusal) return { acknowledged: false, code: refusal.code, message: refusal.message }
    if (answer.type === YType.syncStatus) return answer.value === 1 ? { acknowledged: true, message: 'SyncStatus 1' } : { acknowledged: false, code: 'not_saved', message: `SyncStatus ${String(answer.value)}` }
    return { acknowledged: false, code: null, message: 'no SyncStatus and no refusal before the reply to a later sync step 1' }
  }
}

// ------------------------------------------------------ SSE and HTTP streaming

/** The event names of an SSE stream: the /ws frame types and `reset` (an error frame is `stream_error`: EventSource fires `error` itself). */
const SSE_EVENTS = ['welcome', 'joined', 'reset', 'room_message', 'message', 'state', 'presence', 'history_cleared', 'server_shutdown', 'disconnected', 'token_expiring', 'close', 'stream_error']

/** Who the probes of a receive-only connection come from (a direct message to itself, sent with the admin token). */
const PROBE_SENDER = 'matrix-probe'

/** An HTTP write of a receive-only door: the route a frame goes to. */
export interface HttpWrite { method: string, path: string }

/**
 * A receive-only connection (GET /sse, GET /stream) and its writes over the
 * HTTP API. Its frames are the stream's events (`{event, id, data}`) and the
 * answers to its HTTP writes (`{http, body, write}`), in arrival order; the
 * writes are made one after the other, so an answer covers every write before
 * it. `resource` is the room it listed (`?rooms=`).
 *
 * A stream has no close code: its end is read from its last words, the
 * `close` event's `code` (token expiry), 1001 after `server_shutdown` (what
 * /ws closes with then), 1006 after none.
 */
export abstract class StreamConnection extends DoorConnection {
  welcome: any = null
  protected response: http.IncomingMessage | null = null
  protected readonly keepalive: KeepaliveCounter
  private writes: Promise<unknown> = Promise.resolve()
  private probes = 0

  constructor (door: Door, server: ServerTarget, address: string, resource: string, token: string | undefined, format: 'sse' | 'ndjson') {
    super(door, server, address, resource, token)
    this.keepalive = new KeepaliveCounter(format)
  }

  /** The client id the server gave the stream (its welcome). */
  get clientId (): string {
    return String(this.welcome?.clientId ?? '')
  }

  get open (): boolean {
    return this.response !== null && this.closedWith === null
  }

  get heartbeats (): number {
    return this.keepalive.count
  }

  /** Pauses the response: Node stops reading its socket once its buffer is full. */
  stopReading (): void {
    this.response?.pause()
  }

  resumeReading (): void {
    this.response?.resume()
  }

  /** The end as its last words tell it (see the class comment). */
  protected lastWords (): Closed {
    for (let i = this.frames.length - 1; i >= 0; i--) {
      const f = this.frames[i]
      if (f?.event === 'close') return { code: Number(f.data?.code), reason: String(f.data?.reason ?? '') }
      if (f?.event === 'server_shutdown') return { code: 1001, reason: String(f.data?.reason ?? 'server_shutdown') }
      if (f?.event === 'disconnected') return { code: 1000, reason: String(f.data?.reason ?? '') }
      if (f?.event !== undefined) break
    }
    return { code: 1006, reason: '' }
  }

  /** A stream event, parsed, as a frame. */
  protected event (event: string, id: string, data: string): void {
    let parsed: unknown = data
    try { parsed = JSON.parse(data) } catch {}
    if (event === 'welcome') this.welcome = parsed
    this.received({ event, id, data: parsed })
  }

  /** An HTTP write, made after the earlier ones were answered; its answer is recorded as a frame too. */
  async httpWrite (write: HttpWrite, body: string | Uint8Array | undefined, opts: { contentType?: string, token?: string, probe?: boolean } = {}): Promise<{ status: number, body: any }> {
    const token = opts.token ?? this.token
    const run = async () => {
      const res = await fetch(`${this.server.url}${write.path}`, {
        method: write.method,
        headers: { ...(body === undefined ? {} : { 'content-type': opts.contentType ?? 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body
      })
      const text = await res.text()
      let parsed: unknown = text
      try { parsed = JSON.parse(text) } catch {}
      this.received({ http: res.status, body: parsed, write: `${write.method} ${write.path}`, ...(opts.probe ? { probe: true } : {}) })
      return { status: res.status, body: parsed as any }
    }
    const answer = this.writes.then(run, run)
    this.writes = answer.catch(() => {})
    return await answer
  }

  /** The publish of the connection's room. */
  get publishWrite (): HttpWrite {
    return { method: 'POST', path: `/api/rooms/${this.resource}/publish` }
  }

  /** Sends `data` as the body of a publish to its room. */
  send (data: string | Uint8Array, binary = typeof data !== 'string'): void {
    this.httpWrite(this.publishWrite, data, { contentType: binary ? 'application/octet-stream' : 'application/json' }).catch(() => {})
  }

  override deliver (frame: { data: string | Uint8Array, binary: boolean, write?: HttpWrite }): void {
    if (frame.write === undefined) return this.send(frame.data, frame.binary)
    this.httpWrite(frame.write, frame.data, { contentType: frame.binary ? 'application/octet-stream' : 'application/json' }).catch(() => {})
  }

  /** An HTTP write's error answer (the probes' own answers are not refusals of what was sent). */
  refusalOf (frame: any): Refusal | null {
    if (typeof frame?.http !== 'number' || frame.http < 400 || frame.probe === true) return null
    const body = typeof frame.body === 'object' && frame.body !== null ? frame.body : {}
    return { code: body.code, message: String(body.message ?? frame.body), status: frame.http, ...(body.limit === undefined ? {} : { limit: body.limit }) }
  }

  /**
   * A direct message to itself (POST /api/send with the admin token), made
   * after every earlier write was answered: its arrival on the stream shows the
   * server handled them and the stream delivered everything sent before it.
   */
  protected sendProbe (): (frame: any) => boolean {
    const text = `probe-${++this.probes}`
    this.httpWrite({ method: 'POST', path: '/api/send' }, JSON.stringify({ from: PROBE_SENDER, to: this.clientId, text }), { token: ADMIN_TOKEN, probe: true }).catch(() => {})
    return f => f?.event === 'message' && f.data?.from === PROBE_SENDER && f.data.text === text
  }

  /** A publish over HTTP: its 200 is the acknowledgement, its arrival on the stream the read-back. */
  async write (tag: string): Promise<void> {
    const from = this.frames.length
    const answer = await this.httpWrite(this.publishWrite, JSON.stringify({ data: { tag } }))
    if (answer.status !== 200) throw new Error(`${this.door.name}: publish not acknowledged: ${answer.status} ${JSON.stringify(answer.body)}`)
    await this.next(f => f?.event === 'room_message' && f.data?.room === this.resource && f.data.data?.tag === tag, `the published ${tag} on the stream`, from)
  }

  async stored (): Promise<string[]> {
    return await roomHistoryTags(this.server, this.resource, this.token)
  }

  /** The tags of the room's messages received, live and in `missed` of `joined`/`reset`, in order. */
  roomTags (): string[] {
    const out: string[] = []
    for (const f of this.frames) {
      if (f?.data?.room !== this.resource) continue
      if (f.event === 'room_message') out.push(f.data.data?.tag)
      if (f.event === 'joined' || f.event === 'reset') out.push(...(f.data.missed as Array<{ data?: { tag?: string } }>).map(m => String(m.data?.tag)))
    }
    return out
  }

  /** The id of the last event received (what a client resumes from). */
  get lastEventId (): string {
    for (let i = this.frames.length - 1; i >= 0; i--) if (typeof this.frames[i]?.id === 'string' && this.frames[i].event !== undefined) return this.frames[i].id
    return ''
  }

  /** Resolves once the stream opened (200) and said welcome; rejects with `statusCode` when refused. */
  abstract opened (): Promise<void>
}

/** GET /sse read by the `eventsource` package (over node:http, from the connection's address); a connection is one stream: it does not reconnect. */
export class SseConnection extends StreamConnection {
  readonly source: EventSource
  private status = 0
  private refusedWith: Error | null = null
  private openWaiters: Array<() => void> = []

  constructor (door: Door, url: string, server: ServerTarget, address: string, resource: string, token?: string, headers: Record<string, string> = {}) {
    super(door, server, address, resource, token, 'sse')
    this.source = new EventSource(url, {
      fetch: httpFetch({
        localAddress: address,
        headers,
        response: res => { this.response = res; this.status = res.statusCode ?? 0 },
        chunk: text => this.keepalive.feed(text)
      })
    })
    for (const name of SSE_EVENTS) {
      this.source.addEventListener(name, e => this.event(name, e.lastEventId, e.data))
    }
    this.source.addEventListener('open', () => this.wakeOpen())
    this.source.addEventListener('error', e => {
      // the stream ended (every event before its end was dispatched), or it was refused: no reconnect either way
      this.source.close()
      if (this.status !== 200) this.refusedWith = Object.assign(new Error(`GET ${url.replace(/token=[^&]+/, 'token=…')} refused with ${e.code ?? this.status}: ${e.message ?? ''}`), { statusCode: e.code ?? this.status })
      this.ended(this.status === 200 ? this.lastWords() : { code: 1006, reason: `refused ${this.status}` })
      this.wakeOpen()
    })
  }

  private wakeOpen (): void {
    for (const w of this.openWaiters.splice(0)) w()
  }

  async opened (): Promise<void> {
    if (this.source.readyState !== this.source.OPEN && this.closedWith === null) await new Promise<void>(resolve => this.openWaiters.push(resolve))
    if (this.refusedWith) throw this.refusedWith
    await this.next(f => f?.event === 'welcome', 'welcome')
  }

  async close (): Promise<void> {
    if (this.closedWith) return
    this.source.close()
    this.response?.resume()
    this.response?.destroy()
    this.ended({ code: 1005, reason: 'closed by the client' })
  }
}

/** GET /stream read over plain node:http, its NDJSON lines parsed here. */
export class NdjsonConnection extends StreamConnection {
  private readonly request: http.ClientRequest

  constructor (door: Door, url: string, server: ServerTarget, address: string, resource: string, token?: string, headers: Record<string, string> = {}) {
    super(door, server, address, resource, token, 'ndjson')
    this.request = http.get(url, { localAddress: address, agent: false, headers }, res => {
      this.response = res
      res.setEncoding('utf8')
      let buffer = ''
      let refusal = ''
      res.on('data', (chunk: string) => {
        if (res.statusCode !== 200) {
          refusal += chunk
          return
        }
        this.keepalive.feed(chunk)
        const parsed = parseNdjson(buffer + chunk)
        buffer = parsed.rest
        for (const e of parsed.events) this.event(e.event, e.id, JSON.stringify(e.data))
      })
      res.on('close', () => {
        this.ended(res.statusCode === 200 ? this.lastWords() : { code: 1006, reason: `refused ${String(res.statusCode)}: ${refusal}` })
      })
    })
    this.request.on('error', err => this.ended({ code: 1006, reason: err.message }))
  }

  async opened (): Promise<void> {
    // a refused request ends with its answer: the condition holds before the close is reported
    await this.waitUntil(() => this.response !== null && (this.response.statusCode !== 200 || this.welcome !== null), 'the response and its welcome')
    const res = this.response!
    if (res.statusCode !== 200) {
      await this.closed
      throw Object.assign(new Error(`GET /stream refused with ${String(res.statusCode)}: ${this.closedWith?.reason ?? ''}`), { statusCode: res.statusCode })
    }
  }

  async close (): Promise<void> {
    if (this.closedWith) return
    this.response?.resume()
    this.request.destroy()
    await this.closed
  }
}

// ------------------------------------------------------------------ the doors

export interface HostileFrame {
  name: string
  data: string | Uint8Array
  binary: boolean
  /** The field the refusal must name. */
  field?: string
  /** The limit the refusal must name. */
  limit?: number
  /** Nested past JSON_MAX_DEPTH: switchboard's refusal carries the limit in its `limit` field too. */
  tooDeep?: boolean
  /** The exact refusal code expected, where the contract fixes it. */
  code?: string | number
  /** Hocuspocus: the document the refusal must be for (the frame names it). */
  forDocument?: string
  /** A receive-only door: the HTTP write the frame is the body of [the publish of its room]. */
  write?: HttpWrite
}

/** How a write was answered. */
export interface WriteOutcome {
  acknowledged: boolean
  /** The refusal's code (switchboard error code, HTTP status, 'permission_denied', 'not_saved'), when refused. */
  code?: string | number | null
  message: string
}

export interface WriteAttempt {
  name: string
  attempt (tag: string): Promise<WriteOutcome>
}

export interface CloseCodes {
  /** A frame over WS_MAX_PAYLOAD (doors that take frames). */
  tooLarge?: number
  /** Sustained flooding over WS_MESSAGES_PER_SECOND (doors that take frames). */
  flood?: number
  /** The Switchboard token expired (doors that carry one). */
  tokenExpired?: number
  /** Graceful shutdown. */
  shutdown: number
}

/** Limits the matrix servers are started with, for the field-limit frames. */
export interface FieldLimits {
  textMaxLength: number
  maxEventPayloadBytes: number
  yjsMaxUpdateBytes: number
}

/** One way of flooding a connection with messages. */
export interface Flood {
  name: string
  /** Sends `n` messages at once. */
  send (conn: DoorConnection, n: number): void
}

export interface Door {
  readonly name: DoorName
  /** What the server's environment needs for this door. */
  readonly env: Record<string, string>
  /** Cases that do not apply to this door, and why (printed as a comment of the matrix). */
  readonly notApplicable: Partial<Record<CaseName, string>>
  readonly closeCodes: CloseCodes
  /**
   * Receive-only: the connection carries nothing from the client (SSE, HTTP
   * streaming); its writes are HTTP requests, answered by a status, and no
   * write closes it.
   */
  readonly receiveOnly: boolean
  /** The URL of a connection: its WebSocket upgrade (before any set-up frame), or a stream's GET. */
  url (server: ServerTarget, opts?: OpenOptions): string
  /** Opens a connection; throws with `statusCode` when the upgrade (or the stream's GET) is refused, with `denied` when Hocuspocus denies the document. */
  open (server: ServerTarget, opts?: OpenOptions): Promise<DoorConnection>
  /** Frames a hostile client sends; each must be refused with this door's refusal, never crash or store anything. */
  hostileFrames (conn: DoorConnection): HostileFrame[]
  /** Whether a refusal is the one the contract asks for bad input: null when it is, else what is wrong. */
  badInputProblem (refusal: Refusal, frame: HostileFrame): string | null
  /** A frame of more than `maxPayload` bytes. */
  oversizedFrame (conn: DoorConnection, maxPayload: number): { data: string | Uint8Array, binary: boolean }
  /** A frame with one field over its configured limit, naming them. */
  overFieldLimit (conn: DoorConnection, limits: FieldLimits): HostileFrame
  /** The refusal of a frame over the message rate, when the door has one (JSON doors); null: flooding only closes. */
  readonly rateRefusal: ((r: Refusal) => boolean) | null
  /** Ways of flooding a connection: every kind of message counts against the rate. */
  readonly floods: Flood[]
  /**
   * Prepares a lot for the server to send `conn` (which the test then stops reading):
   * resolves with a function that makes the server send it one more batch.
   */
  loadFor (conn: DoorConnection): Promise<() => Promise<void>>
  /** The writes a client of this door makes on its resource, the first the ordinary one (read-only principals try them all). */
  writeAttempts (conn: DoorConnection): WriteAttempt[]
  /** The refusal of a write a read-only principal may not make. */
  isForbidden (outcome: WriteOutcome): boolean
  /** The refusal of a write the store cannot take, or that cannot reach the other instances. */
  isUnavailable (outcome: WriteOutcome): boolean
  /** A frame that relays another client's write to this connection. */
  isRelayedWrite (frame: any): boolean
  /** What the server holds of `resource` (the tags written), read over HTTP; null for a door that stores nothing. */
  readStored (server: ServerTarget, resource: string, token?: string): Promise<string[] | null>
  /** A message a peer broadcasts to the others without writing (Hocuspocus's stateless broadcast), where the door has one. */
  readonly peerBroadcast: { send (conn: DoorConnection, payload: string): void, received (frame: any, payload: string): boolean } | null
  /**
   * Opens a connection that resumes `conn`'s resource where `conn` left it
   * (native: `join` with `since` and `epoch`; a stream: its last event id),
   * for doors that resume.
   */
  reopen (server: ServerTarget, conn: DoorConnection): Promise<DoorConnection>
  /** The tags of the resource's writes a connection received, in order: live, and replayed when it resumed. */
  delivered (conn: DoorConnection): string[]
  /** What the door says before it closes at shutdown (besides the close code), when it says anything. */
  readonly shutdownNotice: ((frame: any) => boolean) | null
  /** The door's real client library (where a user's behaviour matters): an editor of `resource`, destroyed at teardown. */
  readonly realEditor: ((t: TestContext, server: ServerTarget, resource: string, token?: string) => RealEditor) | null
}

/** A real provider (y-websocket's WebsocketProvider, @hocuspocus/provider) on a Y.Doc. */
export interface RealEditor {
  doc: Y.Doc
  /** The close codes its socket got so far. */
  closeCodes: number[]
  /** Why the server denied it the document, each time it did (Hocuspocus's authenticationFailed). */
  denied: string[]
  synced (): boolean
  destroy (): void
}

/** The `log` a real editor of `resource` sees once synced. */
export async function realClientLog (door: Door, t: TestContext, server: ServerTarget, resource: string, token?: string): Promise<string[]> {
  if (!door.realEditor) throw new Error(`${door.name} has no real client here`)
  const editor = door.realEditor(t, server, resource, token)
  // a socket closed before the sync is a failure of its own (the provider would retry for ever)
  await waitFor(() => editor.synced() || editor.closeCodes.length > 0 || editor.denied.length > 0, `a ${door.name} provider to sync ${resource}`, WAIT_MS, 20)
  if (!editor.synced()) {
    editor.destroy()
    throw new Error(`the ${door.name} provider was ${editor.denied.length > 0 ? `denied the document (${editor.denied.join(', ')})` : `closed with ${editor.closeCodes.join(', ')}`} before it synced ${resource}`)
  }
  const log = editor.doc.getArray<string>('log').toArray()
  editor.destroy()
  return log
}

const JSON_DEPTH_LIMIT = 64

export const switchboard: Door = {
  name: 'switchboard',
  receiveOnly: false,
  env: {},
  notApplicable: {},
  closeCodes: { tooLarge: 1009, flood: 1008, tokenExpired: 1008, shutdown: 1001 },
  url (server, opts = {}) {
    const url = new URL(`${server.url.replace(/^http/, 'ws')}/ws`)
    if (opts.token) url.searchParams.set('token', opts.token)
    return url.toString()
  },
  async open (server, opts = {}) {
    const address = opts.address ?? freshAddress()
    const resource = opts.resource ?? freshName('room')
    const url = this.url(server, opts)
    const ws = startSocket(url, address, opts.origin)
    const conn = new SwitchboardConnection(this, ws, server, address, resource, opts.token)
    await upgraded(ws, url)
    conn.welcome = await conn.next(f => f?.type === 'welcome', 'welcome')
    if (opts.setUp !== false) {
      const joined = await conn.request({ type: 'join', room: resource })
      if (joined.type !== 'joined') throw new Error(`switchboard: join ${resource} refused: ${JSON.stringify(joined)}`)
    }
    return conn
  },
  hostileFrames (conn) {
    const D = deepJson()
    const room = JSON.stringify(conn.resource)
    const deep = (name: string, field: string, text: string): HostileFrame => ({ name: `${field} 30,000 levels deep (${name})`, data: text, binary: false, field, limit: JSON_DEPTH_LIMIT, tooDeep: true, code: 'invalid_message' })
    return [
      deep('publish', 'data', `{"type":"publish","room":${room},"data":${D}}`),
      deep('publish', 'room', `{"type":"publish","room":${D},"data":1}`),
      deep('update', 'patch', `{"type":"update","room":${room},"patch":${D}}`),
      deep('send', 'text', `{"type":"send","to":"nobody","text":${D}}`),
      deep('send', 'to', `{"type":"send","to":${D},"text":"hi"}`),
      deep('join', 'since', `{"type":"join","room":"elsewhere","since":${D}}`),
      deep('exec', 'code', `{"type":"exec","room":${room},"code":${D}}`),
      deep('publish', 'idempotencyKey', `{"type":"publish","room":${room},"data":1,"idempotencyKey":${D}}`),
      deep('ping', 'id', `{"type":"ping","id":${D}}`),
      deep('any frame', 'type', `{"type":${D}}`),
      deep('a field no frame has', 'meta', `{"type":"ping","meta":${D}}`),
      { name: 'the frame itself 30,000 levels deep', data: D, binary: false, code: 'invalid_message' },
      { name: 'malformed JSON', data: `{"type":"publish","room":${room},"data":`, binary: false, code: 'invalid_message' },
      { name: 'a binary frame', data: Buffer.from(`{"type":"publish","room":${room},"data":"binary"}`), binary: true, code: 'invalid_message' }
    ]
  },
  badInputProblem (refusal, frame) {
    if (refusal.code !== 'invalid_message') return `code ${JSON.stringify(refusal.code)}, not invalid_message`
    if (frame.field && !new RegExp(`\\b${frame.field}\\b`).test(refusal.message)) return `the message does not name ${frame.field}: ${refusal.message}`
    if (frame.limit !== undefined && !refusal.message.includes(String(frame.limit))) return `the message does not name the limit ${frame.limit}: ${refusal.message}`
    if (frame.tooDeep && refusal.limit !== frame.limit) return `limit ${JSON.stringify(refusal.limit)}, not ${String(frame.limit)}`
    return null
  },
  oversizedFrame (conn, maxPayload) {
    return { data: JSON.stringify({ type: 'publish', room: conn.resource, data: 'x'.repeat(maxPayload) }), binary: false }
  },
  overFieldLimit (_conn, limits) {
    return { name: `send text of ${limits.textMaxLength + 1} characters`, data: JSON.stringify({ type: 'send', to: 'nobody', text: 'x'.repeat(limits.textMaxLength + 1) }), binary: false, field: 'text', limit: limits.textMaxLength, code: 'invalid_message' }
  },
  rateRefusal: r => r.code === 'rate_limited',
  floods: [{ name: 'ping', send (conn, n) { for (let i = 0; i < n; i++) conn.send(JSON.stringify({ type: 'ping' })) } }],
  async loadFor (conn) {
    const sender = await switchboard.open(conn.server, { resource: conn.resource }) as SwitchboardConnection
    const data = 'y'.repeat(30000)
    return async () => {
      const replies = Array.from({ length: 20 }, () => sender.request({ type: 'publish', room: conn.resource, data }))
      for (const reply of await Promise.all(replies)) if (reply.type !== 'ack') throw new Error(`the sender's publish failed: ${JSON.stringify(reply)}`)
    }
  },
  writeAttempts (conn) {
    const sb = conn as SwitchboardConnection
    const room = conn.resource
    const outcome = async (msg: Record<string, unknown>): Promise<WriteOutcome> => {
      const reply = await sb.request(msg)
      return reply.type === 'ack' ? { acknowledged: true, message: JSON.stringify(reply) } : { acknowledged: false, code: reply.code, message: String(reply.message ?? JSON.stringify(reply)) }
    }
    return [
      { name: 'publish', attempt: tag => outcome({ type: 'publish', room, data: { tag } }) },
      { name: 'update', attempt: tag => outcome({ type: 'update', room, patch: { [tag]: true } }) },
      { name: 'exec', attempt: () => outcome({ type: 'exec', room, code: '1 + 1' }) }
    ]
  },
  isForbidden: o => !o.acknowledged && o.code === 'forbidden',
  isUnavailable: o => !o.acknowledged && o.code === 'unavailable',
  isRelayedWrite: f => f?.type === 'room_message' || f?.type === 'state' || f?.type === 'exec_result' || f?.type === 'message',
  readStored: (server, resource, token) => roomHistoryTags(server, resource, token),
  async reopen (server, conn) {
    let since: { offset: number, epoch: string } | undefined
    for (const f of conn.frames) {
      if ((f?.type === 'joined' || f?.type === 'room_message') && f.room === conn.resource) since = { offset: f.offset, epoch: f.epoch }
    }
    if (!since) throw new Error('switchboard: the connection never joined its room')
    const again = await switchboard.open(server, { resource: conn.resource, token: conn.token, setUp: false }) as SwitchboardConnection
    const joined = await again.request({ type: 'join', room: conn.resource, since: since.offset, epoch: since.epoch })
    if (joined.type !== 'joined') throw new Error(`switchboard: join ${conn.resource} since ${since.offset} refused: ${JSON.stringify(joined)}`)
    return again
  },
  delivered (conn) {
    const out: string[] = []
    for (const f of conn.frames) {
      if (f?.room !== conn.resource) continue
      if (f.type === 'room_message') out.push(f.data?.tag)
      if (f.type === 'joined') out.push(...(f.missed as Array<{ data?: { tag?: string } }>).map(m => String(m.data?.tag)))
    }
    return out
  },
  peerBroadcast: null,
  shutdownNotice: f => f?.type === 'server_shutdown',
  realEditor: null
}

/** For a door that does not resume (its notApplicable says why). */
async function notResumable (): Promise<never> {
  throw new Error('this door does not resume')
}

export const pusher: Door = {
  name: 'pusher',
  receiveOnly: false,
  env: APP_ENV,
  notApplicable: {
    tokenExpiry: 'Pusher clients carry no Switchboard token (the app key and channel signatures authorize them): nothing expires',
    readOnly: 'Pusher clients carry no Switchboard token or rooms claim: what they may do is the app\'s channel signatures',
    storeFailure: 'Pusher events are relayed, not stored in the SQLite store: no write of this door waits on it',
    authRefused: 'Pusher clients carry no Switchboard token: the app key and the channel signatures authorize them (test/pusher.apps.test.ts)',
    resume: 'Pusher channels keep no history: a client that reconnects gets what is published from then on, as Pusher promises'
  },
  closeCodes: { tooLarge: 1009, flood: 4100, shutdown: 4200 },
  url (server) {
    return `${server.url.replace(/^http/, 'ws')}/app/${APP.key}?protocol=7`
  },
  async open (server, opts = {}) {
    const address = opts.address ?? freshAddress()
    const resource = opts.resource ?? freshName('channel')
    const url = this.url(server, opts)
    const ws = startSocket(url, address, opts.origin)
    const conn = new PusherConnection(this, ws, server, address, resource, opts.token)
    await upgraded(ws, url)
    const established = await conn.next(f => f?.event === 'pusher:connection_established', 'connection_established')
    conn.socketId = established.parsed.socket_id
    if (opts.setUp !== false) {
      const answer = await conn.subscribe(conn.channel)
      if (answer.event !== 'pusher_internal:subscription_succeeded') throw new Error(`pusher: subscribing ${conn.channel} refused: ${JSON.stringify(answer)}`)
    }
    return conn
  },
  hostileFrames (conn) {
    const D = deepJson()
    const channel = JSON.stringify((conn as PusherConnection).channel)
    const deep = (name: string, field: string, text: string): HostileFrame => ({ name: `${field} 30,000 levels deep (${name})`, data: text, binary: false, field, code: 4300 })
    return [
      deep('client event, row 1', 'channel', `{"event":"client-x","channel":${D},"data":{}}`),
      deep('client event on its own private channel, row 2', 'data', `{"event":"client-x","channel":${channel},"data":${D}}`),
      deep('any frame', 'event', `{"event":${D},"data":{}}`),
      deep('pusher:subscribe', 'channel', `{"event":"pusher:subscribe","data":{"channel":${D}}}`),
      deep('pusher:subscribe', 'auth', `{"event":"pusher:subscribe","data":{"channel":"private-other","auth":${D}}}`),
      deep('pusher:subscribe of a presence channel', 'channel_data', `{"event":"pusher:subscribe","data":{"channel":"presence-other","auth":"x","channel_data":${D}}}`),
      deep('pusher:signin', 'user_data', `{"event":"pusher:signin","data":{"auth":"x","user_data":${D}}}`),
      deep('pusher:subscribe, the whole data', 'data', `{"event":"pusher:subscribe","data":${D}}`),
      deep('a field no frame has', 'meta', `{"event":"client-x","channel":${channel},"data":{},"meta":${D}}`),
      { name: 'the frame itself 30,000 levels deep', data: D, binary: false, code: 4300 },
      { name: 'malformed JSON', data: `{"event":"client-x","channel":${channel},"data":`, binary: false, code: 4300 },
      { name: 'a binary frame', data: Buffer.from(`{"event":"client-x","channel":${channel},"data":{}}`), binary: true }
    ]
  },
  badInputProblem (refusal, frame) {
    if (typeof refusal.code !== 'number') return `data.code is ${JSON.stringify(refusal.code)}, not a number`
    if (frame.code !== undefined && refusal.code !== frame.code) return `data.code ${refusal.code}, not ${String(frame.code)}`
    if (frame.field && !new RegExp(`\\b${frame.field}\\b`).test(refusal.message)) return `the message does not name ${frame.field}: ${refusal.message}`
    if (frame.limit !== undefined && !refusal.message.includes(String(frame.limit))) return `the message does not name the limit ${frame.limit}: ${refusal.message}`
    return null
  },
  oversizedFrame (conn, maxPayload) {
    return { data: JSON.stringify({ event: 'client-big', channel: (conn as PusherConnection).channel, data: 'x'.repeat(maxPayload) }), binary: false }
  },
  overFieldLimit (conn, limits) {
    return { name: `client event data of ${limits.maxEventPayloadBytes + 1} bytes`, data: JSON.stringify({ event: 'client-big', channel: (conn as PusherConnection).channel, data: 'x'.repeat(limits.maxEventPayloadBytes + 1) }), binary: false, field: 'data', limit: limits.maxEventPayloadBytes, code: 4300 }
  },
  rateRefusal: r => r.code === 4301,
  floods: [{ name: 'pusher:ping', send (conn, n) { for (let i = 0; i < n; i++) (conn as PusherConnection).sendEvent('pusher:ping', {}) } }],
  async loadFor (conn) {
    const sdk = sdkFor(conn.server.port)
    const data = 'z'.repeat(10000)
    const channel = (conn as PusherConnection).channel
    return async () => {
      await sdk.triggerBatch(Array.from({ length: 10 }, () => ({ channel, name: 'chunk', data })))
    }
  },
  writeAttempts (conn) {
    const channel = (conn as PusherConnection).channel
    return [{
      name: 'trigger (signed HTTP API)',
      async attempt (tag) {
        try {
          await sdkFor(conn.server.port).trigger(channel, 'matrix-write', { tag })
          return { acknowledged: true, message: '200' }
        } catch (err) {
          const e = err as { status?: number, body?: string, message: string }
          return { acknowledged: false, code: e.status ?? null, message: e.body ?? e.message }
        }
      }
    }]
  },
  isForbidden: o => !o.acknowledged && o.code === 403,
  isUnavailable: o => !o.acknowledged && o.code === 503,
  isRelayedWrite: f => typeof f?.event === 'string' && !f.event.startsWith('pusher'),
  readStored: async () => null,
  reopen: notResumable,
  delivered: () => [],
  peerBroadcast: null,
  shutdownNotice: f => f?.event === 'pusher:error' && (f.parsed ?? f.data)?.code === 4200,
  realEditor: null
}

/** 14-byte updates that Y.parseUpdateMeta accepts and Y.applyUpdate throws on (found by fuzzing with seed 26). */
export const UNAPPLIABLE_UPDATES = ['000b9487e0e477c2495cd1de66fb', '00094f6e7fe82d9baa09fb6e0edd', '00ef41b04cfe4c9d9131d97c2ad1']

/** A seeded PRNG (mulberry32): the fuzzing is the same on every run. */
export function seededRandom (seed: number): () => number {
  let a = seed
  return () => {
    a |= 0
    a = a + 0x6D2B79F5 | 0
    let x = Math.imul(a ^ a >>> 15, 1 | a)
    x = x + Math.imul(x ^ x >>> 7, 61 | x) ^ x
    return ((x ^ x >>> 14) >>> 0) / 4294967296
  }
}

/** Fuzzes random 14-byte strings (seeded) for `count` updates that parseUpdateMeta accepts and applyUpdate throws on. */
export function fuzzUnappliableUpdates (seed: number, count: number, maxTries = 200000): Uint8Array[] {
  const random = seededRandom(seed)
  const found: Uint8Array[] = []
  for (let tries = 0; tries < maxTries && found.length < count; tries++) {
    const update = Uint8Array.from({ length: 14 }, () => Math.floor(random() * 256))
    try { Y.parseUpdateMeta(update) } catch { continue }
    try {
      Y.applyUpdate(new Y.Doc(), update)
    } catch {
      found.push(update)
    }
  }
  return found
}

/** The hostile y-websocket-level messages both Yjs doors get (Hocuspocus prefixes each with its document name). */
function yjsHostileMessages (): Array<Omit<HostileFrame, 'binary'> & { data: Uint8Array }> {
  const fromHex = (hex: string) => new Uint8Array(Buffer.from(hex, 'hex'))
  const unappliable = [...UNAPPLIABLE_UPDATES.map(fromHex), ...fuzzUnappliableUpdates(2026, 3)]
  const bytes = (...b: number[]) => Uint8Array.from(b)
  return [
    { name: 'an empty message', data: bytes() },
    { name: 'a truncated message type (varint)', data: bytes(0x80) },
    { name: 'a sync message with a truncated sub-type', data: bytes(YType.sync, 0x80) },
    { name: 'a sync step 1 whose length runs past the frame', data: bytes(YType.sync, SyncSub.step1, 5, 1) },
    { name: 'a sync step 1 with a truncated state vector', data: syncMessage(SyncSub.step1, bytes(5, 0x80)) },
    { name: 'an update whose length varint is truncated', data: bytes(YType.sync, SyncSub.update, 0x80) },
    { name: 'an update that is not a Yjs update', data: syncMessage(SyncSub.update, bytes(0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3)) },
    ...unappliable.flatMap((u, i) => [
      { name: `an unappliable 14-byte update ${Buffer.from(u).toString('hex')} as update (row 3${i >= UNAPPLIABLE_UPDATES.length ? ', fuzzed' : ''})`, data: syncMessage(SyncSub.update, u) },
      { name: `an unappliable 14-byte update ${Buffer.from(u).toString('hex')} as sync step 2 (row 3${i >= UNAPPLIABLE_UPDATES.length ? ', fuzzed' : ''})`, data: syncMessage(SyncSub.step2, u), field: 'update' }
    ]),
    { name: 'an awareness message with a truncated length', data: bytes(YType.awareness, 0x80) },
    { name: 'an awareness state that is not JSON', data: awarenessMessage(424242, 1, '{"user":') },
    { name: 'an awareness state 30,000 levels deep', data: awarenessMessage(424243, 1, deepJson()), field: 'awareness' }
  ]
}

function yjsBadInputProblem (refusal: Refusal, frame: HostileFrame): string | null {
  if (refusal.code !== 'permission_denied') return `not a permission-denied message: ${JSON.stringify(refusal)}`
  if (refusal.message === '') return 'the permission-denied message has no reason'
  if (frame.forDocument !== undefined && refusal.doc !== frame.forDocument) return `denied document ${JSON.stringify(refusal.doc)}, not ${frame.forDocument}`
  if (frame.field && !new RegExp(`\\b${frame.field}\\b`).test(refusal.message)) return `the reason does not name ${frame.field}: ${refusal.message}`
  if (frame.limit !== undefined && !refusal.message.includes(String(frame.limit))) return `the reason does not name the limit ${frame.limit}: ${refusal.message}`
  return null
}

/** An update relayed from another peer (y-websocket sends committed updates as sync sub-type 2). */
function yjsRelayedWrite (f: YFrame): boolean {
  return f?.type === YType.sync && f.sub === SyncSub.update
}

async function yjsReadStored (server: ServerTarget, resource: string, token?: string): Promise<string[]> {
  const view = await documentView(server, resource, token)
  if (view.status !== 200) throw new Error(`GET /api/docs/${resource}/update answered ${view.status}`)
  return view.log as string[]
}

/** A Yjs write refused: permission denied, or (Hocuspocus) SyncStatus 0, "not saved". */
function yjsRefused (o: WriteOutcome): boolean {
  return !o.acknowledged && (o.code === 'permission_denied' || o.code === 'not_saved')
}

/** Y updates of about `bytes` in all, in pieces under the update limit: a document that big. */
async function growDocument (writer: YjsConnection, bytes: number): Promise<void> {
  const piece = 40000
  for (let i = 0; i * piece < bytes; i++) {
    const before = Y.encodeStateVector(writer.local)
    writer.local.getText('bulk').insert(0, String.fromCharCode(97 + (i % 26)).repeat(piece))
    writer.sendMessage(syncMessage(SyncSub.update, Y.encodeStateAsUpdate(writer.local, before)))
  }
  await writer.write('grown')
}

function yjsFloods (): Flood[] {
  return [
    { name: 'empty sync step 1, repeated (row 4)', send (conn, n) { for (let i = 0; i < n; i++) (conn as YjsConnection).sendMessage(syncMessage(SyncSub.step1, EMPTY_STATE_VECTOR)) } },
    { name: 'changes sent as sync step 2 (row 8)', send (conn, n) { for (let i = 0; i < n; i++) (conn as YjsConnection).sendUpdate(`step2-${i}`, SyncSub.step2) } },
    { name: 'updates', send (conn, n) { for (let i = 0; i < n; i++) (conn as YjsConnection).sendUpdate(`update-${i}`) } },
    { name: 'awareness', send (conn, n) { for (let i = 0; i < n; i++) (conn as YjsConnection).sendAwareness(JSON.stringify({ cursor: i })) } }
  ]
}

async function yjsLoadFor (door: Door, conn: DoorConnection): Promise<() => Promise<void>> {
  const writer = await door.open(conn.server, { resource: conn.resource }) as YjsConnection
  await growDocument(writer, 200000)
  await writer.close()
  const y = conn as YjsConnection
  return async () => {
    for (let i = 0; i < 10; i++) y.sendMessage(syncMessage(SyncSub.step1, EMPTY_STATE_VECTOR))
  }
}

/** What both Yjs doors share: how a write is attempted and how its refusal and its effects are seen. */
const yjsDoorCommon = {
  rateRefusal: null,
  floods: yjsFloods(),
  writeAttempts (conn: DoorConnection) {
    return [{ name: 'update', attempt: (tag: string) => (conn as YjsConnection).attemptUpdate(tag) }]
  },
  isForbidden: yjsRefused,
  isUnavailable: yjsRefused,
  isRelayedWrite: yjsRelayedWrite,
  readStored: yjsReadStored,
  reopen: notResumable,
  delivered: () => []
} satisfies Partial<Door>

export const yWebsocket: Door = {
  name: 'y-websocket',
  receiveOnly: false,
  env: {},
  notApplicable: {
    order: 'Yjs updates commute: a document converges whatever order its updates arrive in (test/yjs.cluster.test.ts)',
    resume: 'a Yjs client resumes by its state vector: the sync step 2 it gets on reconnecting holds exactly what it misses, and an update applied twice changes nothing (test/yjs.process.test.ts)'
  },
  closeCodes: { tooLarge: 1009, flood: 1013, tokenExpired: 1008, shutdown: 1012 },
  url (server, opts = {}) {
    const url = new URL(`${server.url.replace(/^http/, 'ws')}/yjs/${opts.resource ?? ''}`)
    if (opts.token) url.searchParams.set('token', opts.token)
    return url.toString()
  },
  async open (server, opts = {}) {
    const address = opts.address ?? freshAddress()
    const resource = opts.resource ?? freshName('doc')
    const url = this.url(server, { ...opts, resource })
    const ws = startSocket(url, address, opts.origin)
    const conn = new YWebsocketConnection(this, ws, server, address, resource, opts.token)
    await upgraded(ws, url)
    // the server greets with its sync step 1 once the document is loaded
    if (opts.setUp !== false) await conn.next((f: YFrame) => f.type === YType.sync && f.sub === SyncSub.step1, 'the server\'s sync step 1')
    return conn
  },
  hostileFrames () {
    return [
      { name: 'a text frame', data: '{"type":"update"}', binary: false },
      ...yjsHostileMessages().map(m => ({ ...m, binary: true }))
    ]
  },
  badInputProblem: (refusal, frame) => yjsBadInputProblem(refusal, frame),
  oversizedFrame (_conn, maxPayload) {
    return { data: syncMessage(SyncSub.update, new Uint8Array(maxPayload)), binary: true }
  },
  overFieldLimit (conn, limits) {
    const y = conn as YjsConnection
    const before = Y.encodeStateVector(y.local)
    y.local.getText('big').insert(0, 'x'.repeat(limits.yjsMaxUpdateBytes + 100))
    return { name: `an update of more than ${limits.yjsMaxUpdateBytes} bytes`, data: syncMessage(SyncSub.update, Y.encodeStateAsUpdate(y.local, before)), binary: true, field: 'update', limit: limits.yjsMaxUpdateBytes }
  },
  ...yjsDoorCommon,
  loadFor (conn) { return yjsLoadFor(yWebsocket, conn) },
  peerBroadcast: null,
  shutdownNotice: null,
  realEditor (t, server, resource, token) {
    const editor = yEditor(t, server.url, resource, token ? { token } : {})
    const closeCodes: number[] = []
    editor.provider.on('connection-close', (event: { code: number } | null) => { if (event) closeCodes.push(event.code) })
    return { doc: editor.doc, closeCodes, denied: [], synced: () => editor.provider.synced, destroy: () => editor.provider.destroy() }
  }
}

export const hocuspocus: Door = {
  name: 'hocuspocus',
  receiveOnly: false,
  env: {},
  notApplicable: {
    order: 'Yjs updates commute: a document converges whatever order its updates arrive in (test/yjs.cluster.test.ts)',
    resume: 'a Yjs client resumes by its state vector: the sync step 2 it gets on reconnecting holds exactly what it misses, and an update applied twice changes nothing (test/yjs.process.test.ts)'
  },
  closeCodes: { tooLarge: 1009, flood: 1013, tokenExpired: 1008, shutdown: 1012 },
  url (server) {
    return `${server.url.replace(/^http/, 'ws')}/collab`
  },
  async open (server, opts = {}) {
    const address = opts.address ?? freshAddress()
    const resource = opts.resource ?? freshName('doc')
    const url = this.url(server, opts)
    const ws = startSocket(url, address, opts.origin)
    const conn = new HocuspocusConnection(this, ws, server, address, resource, opts.token)
    await upgraded(ws, url)
    if (opts.setUp !== false) {
      const from = conn.frames.length
      conn.scope = await conn.authenticate(resource, opts.token)
      await conn.next((f: YFrame) => f.doc === resource && f.type === YType.sync && f.sub === SyncSub.step1, 'the server\'s sync step 1', from)
    }
    return conn
  },
  hostileFrames (conn) {
    const h = conn as HocuspocusConnection
    const name = encoding.createEncoder()
    encoding.writeVarString(name, h.resource)
    const prefix = encoding.toUint8Array(name)
    const withName = (m: Uint8Array) => Uint8Array.from([...prefix, ...m])
    const auth = encoding.createEncoder()
    encoding.writeVarUint(auth, YType.auth)
    encoding.writeVarUint(auth, 0)
    encoding.writeVarUint(auth, 40)
    encoding.writeUint8(auth, 0x61)
    return [
      { name: 'a text frame', data: 'hello', binary: false },
      { name: 'an empty binary frame', data: new Uint8Array(0), binary: true },
      { name: 'a truncated document-name length (varint)', data: Uint8Array.of(0x85), binary: true },
      { name: 'a document name that runs past the frame', data: Uint8Array.of(10, 0x61), binary: true },
      { name: 'an Auth message with a truncated token', data: withName(encoding.toUint8Array(auth)), binary: true, forDocument: h.resource },
      { name: 'a stateless broadcast with a truncated payload', data: withName(Uint8Array.of(YType.broadcastStateless, 0x85)), binary: true },
      ...yjsHostileMessages().filter(m => m.data.length > 0).map(m => ({ ...m, data: withName(m.data), binary: true, forDocument: h.resource }))
    ]
  },
  badInputProblem: (refusal, frame) => yjsBadInputProblem(refusal, frame),
  oversizedFrame (conn, maxPayload) {
    const enc = encoding.createEncoder()
    encoding.writeVarString(enc, conn.resource)
    encoding.writeUint8Array(enc, syncMessage(SyncSub.update, new Uint8Array(maxPayload)))
    return { data: encoding.toUint8Array(enc), binary: true }
  },
  overFieldLimit (conn, limits) {
    const frame = yWebsocket.overFieldLimit(conn, limits)
    const enc = encoding.createEncoder()
    encoding.writeVarString(enc, conn.resource)
    encoding.writeUint8Array(enc, frame.data as Uint8Array)
    return { ...frame, data: encoding.toUint8Array(enc), forDocument: conn.resource }
  },
  ...yjsDoorCommon,
  loadFor (conn) { return yjsLoadFor(hocuspocus, conn) },
  peerBroadcast: {
    send (conn, payload) {
      const enc = encoding.createEncoder()
      encoding.writeVarUint(enc, YType.broadcastStateless)
      encoding.writeVarString(enc, payload)
      ;(conn as YjsConnection).sendMessage(encoding.toUint8Array(enc))
    },
    received: (f: YFrame, payload) => f.type === YType.stateless && f.text === payload
  },
  shutdownNotice: null,
  realEditor (t, server, resource, token) {
    const doc = new Y.Doc()
    const socket = new HocuspocusProviderWebsocket({ url: `${server.url.replace(/^http/, 'ws')}/collab`, WebSocketPolyfill: WebSocket as any })
    const provider = new HocuspocusProvider({ websocketProvider: socket, name: resource, document: doc, token: token ?? null })
    provider.attach()
    const closeCodes: number[] = []
    const denied: string[] = []
    provider.on('close', ({ event }: { event: { code: number } }) => closeCodes.push(event.code))
    provider.on('authenticationFailed', ({ reason }: { reason: string }) => denied.push(reason))
    const destroy = () => { provider.destroy(); socket.destroy() }
    t.teardown(() => { destroy(); doc.destroy() })
    return { doc, closeCodes, denied, synced: () => provider.synced && !provider.hasUnsyncedChanges, destroy }
  }
}

/** The HTTP API's body limit (Fastify's bodyLimit: 1 MiB unless ROOM_STATE_MAX_BYTES asks for more). */
export const HTTP_BODY_LIMIT = 1048576

/** The hostile bodies of a receive-only door's HTTP writes: publish to its room, patch its state, send a direct message. */
function httpHostileFrames (conn: DoorConnection): HostileFrame[] {
  const D = deepJson()
  const publish = { method: 'POST', path: `/api/rooms/${conn.resource}/publish` }
  const state = { method: 'PATCH', path: `/api/rooms/${conn.resource}/state` }
  const send = { method: 'POST', path: '/api/send' }
  const deep = (name: string, field: string, text: string, write: HttpWrite): HostileFrame => ({ name: `${field} 30,000 levels deep (${name})`, data: text, binary: false, field, limit: JSON_DEPTH_LIMIT, tooDeep: true, code: 'invalid_message', write })
  return [
    deep('publish', 'data', `{"data":${D}}`, publish),
    deep('publish, the whole body', 'body', D, publish),
    deep('patch', 'patch', `{"patch":${D}}`, state),
    deep('send', 'text', `{"from":"matrix","to":"nobody","text":${D}}`, send),
    deep('send', 'to', `{"from":"matrix","to":${D},"text":"hi"}`, send),
    deep('a field no write has', 'meta', `{"data":1,"meta":${D}}`, publish),
    { name: 'malformed JSON (publish)', data: '{"data":', binary: false, code: 'invalid_message', write: publish },
    { name: 'malformed JSON (patch)', data: '{"patch":{', binary: false, code: 'invalid_message', write: state },
    { name: 'a body that is not JSON (application/octet-stream)', data: Buffer.from('{"data":"binary"}'), binary: true, code: 'unsupported_media_type', write: publish }
  ]
}

function httpBadInputProblem (refusal: Refusal, frame: HostileFrame): string | null {
  const code = frame.code ?? 'invalid_message'
  if (refusal.code !== code) return `code ${JSON.stringify(refusal.code)}, not ${String(code)}`
  if (refusal.status === undefined || refusal.status < 400 || refusal.status >= 500) return `status ${String(refusal.status)}, not a 4xx`
  if (frame.field && !new RegExp(`\\b${frame.field}\\b`).test(refusal.message)) return `the message does not name ${frame.field}: ${refusal.message}`
  if (frame.limit !== undefined && !refusal.message.includes(String(frame.limit))) return `the message does not name the limit ${frame.limit}: ${refusal.message}`
  if (frame.tooDeep && refusal.limit !== frame.limit) return `limit ${JSON.stringify(refusal.limit)}, not ${String(frame.limit)}`
  return null
}

/** GET /sse or GET /stream: receive-only, its writes over the HTTP API (publish, patch the state, send). */
function streamDoor (name: 'sse' | 'stream', Connection: new (door: Door, url: string, server: ServerTarget, address: string, resource: string, token?: string, headers?: Record<string, string>) => StreamConnection): Door {
  const door: Door = {
    name,
    env: {},
    receiveOnly: true,
    notApplicable: {
      rate: 'a stream carries nothing from the client, so it has no frame rate to exceed; its HTTP writes are limited per address by RATE_LIMIT_MAX with 429 (test/rate-limit.test.ts)',
      deadPeer: 'a stream has no ping to leave unanswered: a peer that stops reading is closed by the send-buffer cap (case d), one that vanished by the TCP keepalive probes set on its socket, which loopback cannot lose; its keepalive lines are case o'
    },
    closeCodes: { tokenExpired: 1008, shutdown: 1001 },
    url (server, opts = {}) {
      const url = new URL(`${server.url}/${name}`)
      url.searchParams.set('rooms', opts.resource ?? '')
      if (opts.token) url.searchParams.set('token', opts.token)
      if (opts.lastEventId) url.searchParams.set('lastEventId', opts.lastEventId)
      return url.toString()
    },
    async open (server, opts = {}) {
      const address = opts.address ?? freshAddress()
      const resource = opts.resource ?? freshName('room')
      const url = this.url(server, { ...opts, resource })
      const conn = new Connection(door, url, server, address, resource, opts.token, opts.origin === undefined ? {} : { origin: opts.origin })
      try {
        await conn.opened()
      } catch (err) {
        await conn.close()
        throw err
      }
      if (opts.setUp !== false) {
        const joined = await conn.next(f => (f?.event === 'joined' || f?.event === 'reset' || f?.event === 'error' || f?.event === 'stream_error') && f.data?.room === resource, `the joined event of ${resource}`)
        if (joined.event !== 'joined' && joined.event !== 'reset') throw new Error(`${name}: ${resource} not joined: ${JSON.stringify(joined.data)}`)
      }
      return conn
    },
    hostileFrames: conn => httpHostileFrames(conn),
    badInputProblem: httpBadInputProblem,
    oversizedFrame (conn, bodyLimit) {
      return { data: JSON.stringify({ data: 'x'.repeat(bodyLimit) }), binary: false }
    },
    overFieldLimit (_conn, limits) {
      return { name: `send text of ${limits.textMaxLength + 1} characters`, data: JSON.stringify({ from: 'matrix', to: 'nobody', text: 'x'.repeat(limits.textMaxLength + 1) }), binary: false, field: 'text', limit: limits.textMaxLength, code: 'invalid_message', write: { method: 'POST', path: '/api/send' } }
    },
    rateRefusal: null,
    floods: [],
    async loadFor (conn) {
      const data = 'y'.repeat(30000)
      const stream = conn as StreamConnection
      return async () => {
        const answers = await Promise.all(Array.from({ length: 20 }, () => httpJson(conn.server, 'POST', `/api/rooms/${conn.resource}/publish`, { data }, stream.token)))
        for (const a of answers) if (a.status !== 200) throw new Error(`a publish to load the stream failed: ${a.status} ${JSON.stringify(a.body)}`)
      }
    },
    writeAttempts (conn) {
      const stream = conn as StreamConnection
      const outcome = async (write: HttpWrite, body: unknown): Promise<WriteOutcome> => {
        const answer = await stream.httpWrite(write, JSON.stringify(body))
        return answer.status === 200 ? { acknowledged: true, message: JSON.stringify(answer.body) } : { acknowledged: false, code: answer.body?.code, message: `${answer.status} ${String(answer.body?.message ?? JSON.stringify(answer.body))}` }
      }
      return [
        { name: 'publish (POST /api/rooms/:room/publish)', attempt: tag => outcome(stream.publishWrite, { data: { tag } }) },
        { name: 'update (PATCH /api/rooms/:room/state)', attempt: tag => outcome({ method: 'PATCH', path: `/api/rooms/${conn.resource}/state` }, { patch: { [tag]: true } }) }
      ]
    },
    isForbidden: o => !o.acknowledged && o.code === 'forbidden',
    isUnavailable: o => !o.acknowledged && o.code === 'unavailable',
    isRelayedWrite: f => f?.event === 'room_message' || f?.event === 'state' || (f?.event === 'message' && f.data?.from !== PROBE_SENDER),
    readStored: (server, resource, token) => roomHistoryTags(server, resource, token),
    async reopen (server, conn) {
      return await door.open(server, { resource: conn.resource, token: conn.token, lastEventId: (conn as StreamConnection).lastEventId })
    },
    delivered: conn => (conn as StreamConnection).roomTags(),
    peerBroadcast: null,
    shutdownNotice: f => f?.event === 'server_shutdown',
    realEditor: null
  }
  return door
}

/** GET /sse, read by the `eventsource` package. */
export const sse: Door = streamDoor('sse', SseConnection)
/** GET /stream (NDJSON), read over plain node:http. */
export const stream: Door = streamDoor('stream', NdjsonConnection)

/** Every door of the service, in the order the matrix reports them. */
export const DOORS: Door[] = [switchboard, pusher, yWebsocket, hocuspocus, sse, stream]

/** The environment every door needs. */
export function doorsEnv (): Record<string, string> {
  return Object.assign({}, ...DOORS.map(d => d.env))
}

/** The not-applicable map as readable lines, for a test comment. */
export function notApplicableTable (): string {
  const lines = ['cases that do not apply, per door:']
  for (const door of DOORS) {
    for (const [c, why] of Object.entries(door.notApplicable)) lines.push(`  ${door.name} / ${CASES[c as CaseName]}: ${why}`)
  }
  return lines.join('\n')
}
