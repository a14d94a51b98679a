import fp from 'fastify-plugin'
import cors from '@fastify/cors'
import type { AddressInfo } from 'node:net'
import { Server as TlsServer } from 'node:tls'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { errorBody } from '../core/errors.js'

export interface CorsOptions {
  /** Exact origins allowed for CORS and for WebSocket upgrades; `*` allows any, only when listed. */
  origins?: string[]
  /** PUBLIC_URL: where the server serves its own pages; unset = derived from the address it listens on. */
  publicUrl?: string
}

/**
 * The origins a server listening at `address` serves its own pages from when
 * no PUBLIC_URL is configured: the address itself, and the loopback names when
 * it is a loopback or wildcard address. Never the request's Host header, which
 * a DNS-rebinding page chooses. `scheme`: https when the server has TLS (TLS_CERT).
 */
export function listenOrigins (address: AddressInfo, scheme: 'http' | 'https' = 'http'): string[] {
  const { address: ip, port } = address
  const loopback = [`${scheme}://localhost:${port}`, `${scheme}://127.0.0.1:${port}`, `${scheme}://[::1]:${port}`]
  if (ip === '0.0.0.0' || ip === '::') return loopback
  const own = `${scheme}://${ip.includes(':') ? `[${ip}]` : ip}:${port}`
  if (ip === '::1' || ip.startsWith('127.')) return [...new Set([...loopback, own])]
  return [own]
}

/** The exact-match whitelist shared by CORS and the WebSocket upgrade check. */
export class OriginPolicy {
  private readonly allowed: Set<string>
  readonly any: boolean

  /** `own`: the server's own origins (PUBLIC_URL's, or the listen address's once known). */
  constructor (origins: string[], private readonly own: () => readonly string[] = () => []) {
    this.allowed = new Set(origins)
    this.any = this.allowed.has('*')
  }

  /** No Origin (a non-browser client), a listed origin, or the server's own origin. */
  allows (origin: string | undefined): boolean {
    if (origin === undefined) return true
    if (this.any) return true
    return this.allowed.has(origin) || this.own().includes(origin)
  }

  get list (): string[] {
    return [...this.allowed]
  }

  get ownOrigins (): readonly string[] {
    return this.own()
  }
}

/**
 * Whether a browser sent this request as a same-origin one: its Origin names
 * the host the request was sent to. Then no CORS rule applies in the browser,
 * so the server must refuse it unless that origin is really its own (a page
 * whose DNS name was rebound to this server sends exactly this).
 */
function sameOriginAsHost (origin: string, host: string | undefined): boolean {
  if (host === undefined || !URL.canParse(origin) || !URL.canParse(`http://${host}`)) return false
  const url = new URL(origin)
  const target = new URL(`${url.protocol}//${host}`)
  return url.host === target.host
}

/** preValidation hook for the upgrade route: CORS does not protect WebSockets, this does. */
// declared out here: inside `declare module 'fastify'` the emitted .d.ts could not name FastifyReply
export type CheckUpgradeOrigin = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

declare module 'fastify' {
  interface FastifyInstance {
    origins: OriginPolicy
    /** preValidation hook for the upgrade route: CORS does not protect WebSockets, this does. */
    checkUpgradeOrigin: CheckUpgradeOrigin
  }
}

export default fp<CorsOptions>(async function corsPolicy (app, opts) {
  let own: string[] = opts.publicUrl === undefined ? [] : [new URL(opts.publicUrl).origin]
  const ownOrigins = () => {
    if (own.length === 0) {
      const address = app.server.address()
      if (address !== null && typeof address === 'object') own = listenOrigins(address, app.server instanceof TlsServer ? 'https' : 'http')
    }
    return own
  }
  const policy = new OriginPolicy(opts.origins ?? ['http://localhost:3000', 'http://localhost:5000', 'http://127.0.0.1:3000', 'http://127.0.0.1:5000'], ownOrigins)
  app.decorate('origins', policy)

  await app.register(cors, {
    origin: policy.any ? '*' : (origin, cb) => cb(null, origin !== undefined && policy.allows(origin)),
    methods: ['GET', 'POST', 'PATCH', 'OPTIONS'],
    allowedHeaders: ['Content-Type', 'Authorization', 'Idempotency-Key'],
    maxAge: 600
  })

  // Every route, every spelling: a browser enforces nothing on a request it thinks is same-origin.
  app.addHook('onRequest', function refuseRebinding (request, reply, done) {
    const origin = request.headers.origin
    if (origin === undefined || policy.allows(origin) || !sameOriginAsHost(origin, request.headers.host)) return done()
    request.log.warn({ event: 'origin.rejected', origin: origin.slice(0, 200), clientKey: request.clientKey, route: request.routeOptions.url ?? 'unmatched' }, 'a same-origin request from an origin that is not this server\'s (DNS rebinding?)')
    reply.code(403).send(errorBody(403, 'forbidden', 'origin not allowed: this server serves its pages from PUBLIC_URL, not from the Host this request names'))
  })

  app.decorate('checkUpgradeOrigin', async function checkUpgradeOrigin (request: FastifyRequest, reply: FastifyReply) {
    const origin = request.headers.origin
    if (policy.allows(origin)) return
    request.log.warn({ event: 'connection.rejected', reason: 'origin', origin: origin?.slice(0, 200), clientKey: request.clientKey }, 'upgrade from an origin that is not allowed')
    return reply.code(403).send(errorBody(403, 'forbidden', 'origin not allowed'))
  })
}, { name: 'cors', fastify: '5.x', dependencies: ['identity'] })
