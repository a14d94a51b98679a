import fp from 'fastify-plugin'
import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { requestLoggerFactory } from './request-logger.js'

export interface RequestLogOptions {
  /** Routes whose lines go at debug level: probes and scrapes would drown the rest ['/health', '/ready', '/metrics']. */
  quietRoutes?: string[]
}

/** A query parameter whose decoded name says it holds a credential; a name that cannot be decoded counts as one. */
function secretParam (name: string): boolean {
  try {
    return /token|secret/i.test(decodeURIComponent(name.replace(/\+/g, ' ')))
  } catch {
    return true
  }
}

/**
 * A URL fit for a log line: the value of every query parameter whose decoded
 * name holds `token` (so `%74oken=` too) becomes [REDACTED]. The router ends
 * the path at `?` or `#`, so both start the query here.
 */
export function redactUrl (url: string): string {
  const at = url.search(/[?#]/)
  if (at === -1) return url
  return url.slice(0, at) + url.slice(at).replace(/([?#&;])([^=&;#?]*)=([^&;#?]*)/g, (all, sep: string, name: string) => secretParam(name) ? `${sep}${name}=[REDACTED]` : all)
}

/** The path of a URL without its query (which the router ends at `?` or `#`). */
export function pathOf (url: string): string {
  return url.split(/[?#]/, 1)[0]
}

function routeOf (request: FastifyRequest): string {
  return request.routeOptions.url ?? 'unmatched'
}

/**
 * Fastify's own per-request lines, as events: an incoming request at trace level
 * only, none for a completed one (the request-log plugin writes `http.request`), and the
 * errors it logs carry an `event` and the route, never the URL's query.
 * Pass an instance as the `logController` server option.
 */
export class EventLogController extends LogController {
  /** At trace level only: method, URL (token redacted by the `req` serializer) and remote address. */
  override incomingRequest (request: FastifyRequest): void {
    request.log.trace({ event: 'http.incoming', req: request }, 'incoming request')
  }

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ event: 'http.response_failed', method: request.method, route: routeOf(request), statusCode: reply.statusCode, err: error }, 'the response failed')
  }

  override defaultErrorLog (error: Error, request: FastifyRequest, reply: FastifyReply): void {
    if (reply.statusCode >= 500) {
      reply.log.error({ event: 'http.error', method: request.method, route: routeOf(request), statusCode: reply.statusCode, err: error }, 'request failed')
    } else {
      // the http.request line reports the status; the reason is for debugging
      reply.log.debug({ event: 'http.client_error', method: request.method, route: routeOf(request), statusCode: reply.statusCode, reason: error?.message }, 'request refused')
    }
  }

  override streamError (error: Error & { code?: string }, request: FastifyRequest, reply: FastifyReply): void {
    if (error.code === 'ERR_STREAM_PREMATURE_CLOSE') reply.log.debug({ event: 'http.stream_closed', route: routeOf(request) }, 'the client closed the response stream early')
    else reply.log.warn({ event: 'http.stream_failed', route: routeOf(request), err: error }, 'a response stream failed after its headers were sent')
  }

  override routeNotFound (request: FastifyRequest): void {
    request.log.debug({ event: 'http.not_found', method: request.method, path: pathOf(request.raw.url ?? '') }, 'no such route')
  }

  override writeHeadError (error: Error, request: FastifyRequest, reply: FastifyReply): void {
    reply.log.warn({ event: 'http.write_head_failed', route: routeOf(request), err: error }, 'could not write the response headers')
  }

  override serializerError (error: Error, request: FastifyRequest, reply: FastifyReply, metadata: { statusCode: number }): void {
    reply.log.error({ event: 'http.serializer_failed', route: routeOf(request), statusCode: metadata.statusCode, err: error }, 'the response serializer failed')
  }

  override serviceUnavailable (logger: { info: (obj: object, msg: string) => void }): void {
    logger.info({ event: 'http.refused_closing', statusCode: 503 }, 'request refused: the server is closing')
  }
}

const CLIENT_ERRORS: Record<string, [number, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Client Timeout'],
  HPE_HEADER_OVERFLOW: [431, 'Exceeded maximum allowed HTTP header size']
}

/**
 * The `clientErrorHandler` server option: Fastify's default answer to a request
 * Node could not parse (or that timed out), logged with an event and the error
 * code only. Fastify's own line carries the error's `rawPacket`: the request's
 * bytes, a token included.
 */
export function clientErrorHandler (this: FastifyInstance, err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [statusCode, message] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'Client Error']
  this.log.debug({ event: 'http.client_error', statusCode, code: err.code }, 'the client sent a request that could not be parsed')
  const body = JSON.stringify({ error: STATUS_CODES[statusCode], message, statusCode })
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode]}\r\nContent-Length: ${body.length}\r\nContent-Type: application/json\r\n\r\n${body}`)
  }
  socket.destroy(err)
}

/**
 * A pino `logMethod` hook giving Fastify's "Server listening at" line an event:
 * the one line Fastify writes outside a request. Our own lines always pass an
 * object first, so a string-first call is Fastify's.
 */
export function listeningEvent (this: unknown, args: unknown[], method: (...args: unknown[]) => void): void {
  if (typeof args[0] === 'string' && args[0].startsWith('Server listening at ')) {
    return method.call(this, { event: 'server.address', address: args[0].slice(20) }, args[0])
  }
  return method.apply(this, args)
}

/** Whether a line at `level` would be written; true for a logger that cannot say (not pino). */
function levelEnabled (log: FastifyBaseLogger, level: string): boolean {
  const check = (log as { isLevelEnabled?: (level: string) => boolean }).isLevelEnabled
  return check === undefined ? true : check.call(log, level)
}

/**
 * One `http.request` line per HTTP response: method, route (the pattern, never
 * the URL with its query), status, time and client key; never headers or bodies.
 */
export default fp<RequestLogOptions>(async function requestLog (app, opts) {
  const quiet = new Set(opts.quietRoutes ?? ['/health', '/ready', '/metrics'])
  // request.log becomes pino's child only when a line is written (request-logger.ts)
  app.setChildLoggerFactory(requestLoggerFactory)
  app.addHook('onResponse', function logRequest (request, reply, done) {
    // an accepted upgrade is logged as connection.open/close; below info (quiet
    // routes log at debug, which is lower) nothing is written, so nothing is built
    if ((request.ws && reply.statusCode < 400) || !levelEnabled(request.log, 'info')) return done()
    const route = routeOf(request)
    const line = {
      event: 'http.request',
      method: request.method,
      route,
      statusCode: reply.statusCode,
      responseTime: Math.round(reply.elapsedTime * 100) / 100,
      clientKey: request.clientKey
    }
    if (quiet.has(route)) request.log.debug(line, 'request completed')
    else request.log.info(line, 'request completed')
    done()
  })
}, { name: 'request-log', fastify: '5.x', dependencies: ['identity'] })
