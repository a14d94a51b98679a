import fp from 'fastify-plugin'
import { randomUUID } from 'node:crypto'

/** What a verified token says about its bearer (set by the auth plugin). */
export interface Principal {
  sub: string
  role?: string
  rooms?: string[]
  exp?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Names this instance in `welcome` and across a cluster (Redis keys, pub/sub origins). */
    readonly serverId: string
  }
  interface FastifyRequest {
    /** The verified token's claims; null in open mode. */
    principal: Principal | null
    /**
     * The key per-client limits and rate limits count by: the token's `sub`
     * in auth mode, otherwise the address Fastify resolves under trustProxy.
     */
    readonly clientKey: string
  }
}

export default fp(async function identity (app) {
  app.decorate('serverId', randomUUID())
  app.decorateRequest('principal', null)
  app.decorateRequest('clientKey', {
    getter () {
      return this.principal?.sub ?? this.ip
    }
  })
}, { name: 'identity', fastify: '5.x' })
