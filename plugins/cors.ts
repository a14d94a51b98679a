import fp from 'fastify-plugin'
import cors from '@fastify/cors'
import type { FastifyReply, FastifyRequest } from 'fastify'

export interface CorsOptions {
  /** Exact origins allowed for CORS and for WebSocket upgrades; `*` allows any, only when listed. */
  origins?: string[]
}

/** The exact-match whitelist shared by CORS and the WebSocket upgrade check. */
export class OriginPolicy {
  private readonly allowed: Set<string>
  readonly any: boolean

  constructor (origins: string[]) {
    this.allowed = new Set(origins)
    this.any = this.allowed.has('*')
  }

  /** No Origin (a non-browser client), a listed origin, or the server's own origin. */
  allows (origin: string | undefined, ownOrigin?: string): boolean {
    if (origin === undefined) return true
    if (this.any) return true
    return this.allowed.has(origin) || origin === ownOrigin
  }

  get list (): string[] {
    return [...this.allowed]
  }
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
  const policy = new OriginPolicy(opts.origins ?? ['http://localhost:3000', 'http://localhost:5000'])
  app.decorate('origins', policy)

  await app.register(cors, {
    origin: policy.any ? '*' : (origin, cb) => cb(null, origin !== undefined && policy.allows(origin)),
    methods: ['GET', 'POST', 'PATCH', 'OPTIONS'],
    allowedHeaders: ['Content-Type', 'Authorization'],
    maxAge: 600
  })

  app.decorate('checkUpgradeOrigin', async function checkUpgradeOrigin (request: FastifyRequest, reply: FastifyReply) {
    const origin = request.headers.origin
    if (policy.allows(origin, `${request.protocol}://${request.host}`)) return
    request.log.warn({ event: 'connection.rejected', reason: 'origin', origin: origin?.slice(0, 200), clientKey: request.clientKey }, 'upgrade from an origin that is not allowed')
    return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'origin not allowed' })
  })
}, { name: 'cors', fastify: '5.x', dependencies: ['identity'] })
