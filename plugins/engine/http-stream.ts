import { EventEmitter } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Http2ServerRequest, Http2Stream } from 'node:http2'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Session, type FrameSink, type SessionProtocol, type SessionRegistry, type SessionSocket } from './sessions.js'

/**
 * How a protocol spoken over an HTTP stream writes what the engine sends: one
 * encoder per session (it may keep per-session state, such as the positions
 * an SSE event id carries).
 */
export interface StreamEncoder {
  /** The response's Content-Type. */
  readonly contentType: string
  /**
   * One message, given as the WebSocket text frame the engine built for it
   * (`framePayload` is its JSON; the same Buffer reaches every member of a
   * broadcast, so a codec may cache what it parsed by identity): the text to
   * write, or null to drop it.
   */
  encode (frame: Buffer): string | null
  /** What the heartbeat writes so that proxies see traffic (an SSE comment line, an empty NDJSON line). */
  readonly keepalive: string
}

/**
 * The payload of a WebSocket frame built by `textFrame` (or `binaryFrame`):
 * its header is 2, 4 or 10 bytes (RFC 6455 §5.2; unmasked, unfragmented).
 */
export function framePayload (frame: Buffer): Buffer {
  const length = frame[1] & 0x7f
  const header = length < 126 ? 2 : length === 126 ? 4 : 10
  return frame.subarray(header)
}

/**
 * A stream's response: HTTP/1.1's, or HTTP/2's (a server started with TLS
 * speaks both on one port). An HTTP/2 response is one stream of a session
 * other requests share: what belongs to the stream (its end, its buffer, its
 * timeout) is the stream's, never the session's socket.
 */
export interface StreamResponse {
  write (chunk: string): boolean
  end (): void
  destroy (): void
  cork (): void
  uncork (): void
  once (event: 'close', listener: () => void): unknown
  on (event: 'error', listener: (err: Error) => void): unknown
  readonly writableLength: number
  readonly writableEnded: boolean
  /** HTTP/1.1: the response (its socket) destroyed. */
  readonly destroyed?: boolean
  /** HTTP/2: the response's stream. */
  readonly stream?: Http2Stream
}

/** Whether the response can no longer be written (its HTTP/2 stream or its socket destroyed). */
function destroyed (response: StreamResponse): boolean {
  return response.stream !== undefined ? response.stream.destroyed : response.destroyed === true
}

/**
 * An HTTP response held open as a session's connection: it behaves as the
 * engine expects a WebSocket to (SessionSocket), so the engine's caps, send-
 * buffer cap, heartbeat, token expiry, shutdown and admin disconnect apply
 * unchanged. `close` ends the response (the protocol has written its last
 * words before); the peer is alive as long as its TCP socket is open and
 * reads (a keepalive that the socket takes counts as a pong; one that piles
 * up trips the send-buffer cap).
 */
export class HttpStreamSocket extends EventEmitter implements SessionSocket {
  readyState = 1
  /** When an event or a keepalive was last written. */
  lastWriteAt = Date.now()
  private closeCode = 1005
  private closeReason = ''

  /** `keepaliveMs`: a stream idle this long gets the encoder's keepalive at the heartbeat's next visit (HEARTBEAT_INTERVAL_MS). */
  constructor (readonly response: StreamResponse, readonly encoder: StreamEncoder, readonly keepaliveMs = 0) {
    super()
    response.once('close', () => {
      this.readyState = 3
      this.emit('close', this.closeCode, Buffer.from(this.closeReason))
    })
    response.on('error', () => {})
  }

  /** The response's bytes not yet taken by the peer (Node's buffer and the socket's; HTTP/2: the stream's, held by its flow control). */
  get bufferedAmount (): number {
    return this.response.stream !== undefined ? this.response.stream.writableLength : this.response.writableLength
  }

  /** Ends the stream (what the protocol said before it is written first). */
  close (code = 1000, reason = ''): void {
    if (this.readyState >= 2) return
    this.readyState = 2
    this.closeCode = code
    this.closeReason = reason
    this.response.end()
  }

  terminate (): void {
    if (this.readyState === 3) return
    if (this.readyState === 1) this.closeCode = 1006
    this.readyState = 2
    this.response.destroy()
  }

  /** The heartbeat's visit: a keepalive when the stream has been idle for `keepaliveMs`; an open socket is a live peer. */
  ping (): void {
    if (this.readyState !== 1 || destroyed(this.response)) return
    const now = Date.now()
    if (now - this.lastWriteAt >= this.keepaliveMs) {
      this.lastWriteAt = now
      this.response.write(this.encoder.keepalive)
    }
    this.emit('pong')
  }
}

/** The sink of a stream session: each frame's payload, encoded by the protocol, written to the response. */
class EncodingSink implements FrameSink {
  private readonly response: StreamResponse
  private readonly encoder: StreamEncoder

  constructor (private readonly stream: HttpStreamSocket) {
    this.response = stream.response
    this.encoder = stream.encoder
  }

  get destroyed (): boolean {
    return destroyed(this.response)
  }

  get writableEnded (): boolean {
    return this.response.writableEnded
  }

  cork (): void {
    this.response.cork()
  }

  uncork (): void {
    this.response.uncork()
  }

  write (frame: Buffer): boolean {
    // binary frames (the Yjs protocols) have no meaning on a text stream
    if ((frame[0] & 0x0f) !== 1) return true
    const text = this.encoder.encode(frame)
    if (text === null) return true
    this.stream.lastWriteAt = Date.now()
    return this.response.write(text)
  }
}

/**
 * A session over an HTTP stream (SSE, NDJSON): everything as a WebSocket
 * session (the same sendFrame, held frames, turns and send-buffer cap),
 * except that its frames go to the protocol's encoder instead of a TCP socket.
 */
export class StreamSession extends Session {
  private readonly encoded: EncodingSink

  constructor (readonly stream: HttpStreamSocket, clientId: string, clientKey: string, remoteAddress: string, protocol: SessionProtocol, connectionId?: string) {
    super(stream, clientId, clientKey, remoteAddress, protocol, connectionId)
    this.encoded = new EncodingSink(stream)
  }

  protected override sink (): FrameSink | undefined {
    const sink = this.encoded
    return sink.destroyed || sink.writableEnded ? undefined : sink
  }
}

/**
 * Takes a request whose every check passed (origin, token, access, slot) as
 * a stream session of `protocol`: the reply is hijacked, the headers Fastify
 * prepared (CORS) are written with the stream's own, and the session is the
 * registry's from here on, as an accepted WebSocket is.
 */
export function acceptStream (registry: SessionRegistry, request: FastifyRequest, reply: FastifyReply, opts: { protocol: SessionProtocol, encoder: StreamEncoder, keepaliveMs?: number, clientId?: string, connectionId?: string, headers?: Record<string, string> }): StreamSession {
  reply.hijack()
  // the instance is typed for HTTP/1; with TLS a request may be HTTP/2's (see StreamResponse)
  const raw = request.raw as IncomingMessage | Http2ServerRequest
  // Http2ServerResponse has writeHead and flushHeaders as ServerResponse has them (its types lack flushHeaders)
  const response = reply.raw as ServerResponse
  const headers: Record<string, string | number | string[]> = {}
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) headers[name] = value
  const http2 = 'stream' in raw
  response.writeHead(200, {
    ...headers,
    'content-type': opts.encoder.contentType,
    'cache-control': 'no-cache, no-transform',
    // nginx and others would buffer the stream
    'x-accel-buffering': 'no',
    // HTTP/1.1: the connection slot is released when the TCP socket closes, so a stream's connection is not reused;
    // HTTP/2 forbids the header: the slot is the stream's, released when the stream closes (limits.ts)
    ...(http2 ? {} : { connection: 'close' }),
    ...opts.headers
  })
  response.flushHeaders()
  if ('stream' in raw) {
    // no stream timeout: a stream is idle between events by design (the heartbeat writes, which keeps the session active too)
    raw.stream.setTimeout(0)
  } else {
    // no socket timeout: a stream is idle between events by design (the heartbeat writes)
    raw.socket.setTimeout(0)
  }
  // HTTP/2: the session's TLS socket, shared with the session's other streams
  raw.socket.setNoDelay(true)
  // a peer that vanished without a FIN is found by TCP keepalive probes: its socket closes, and so does the session
  if (opts.keepaliveMs !== undefined && opts.keepaliveMs > 0) raw.socket.setKeepAlive(true, opts.keepaliveMs)
  const stream = new HttpStreamSocket(response as StreamResponse, opts.encoder, opts.keepaliveMs)
  const conn = new StreamSession(stream, registry.clientIdOf(request, opts.clientId), request.clientKey, request.ip, opts.protocol, opts.connectionId)
  registry.adopt(conn, request)
  return conn
}
