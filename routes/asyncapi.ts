import type { FastifyInstance } from 'fastify'
import { asyncApiDocument } from '../plugins/http/asyncapi.js'

export interface AsyncApiRouteOptions {
  /** Version shown in the document [1.0.0]. */
  version?: string
}

/** host:port the server listens on (the configured one before it listens). */
function listenHost (app: FastifyInstance): string {
  const address = app.server.address()
  if (address && typeof address === 'object') return `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
  return `${app.config.HOST}:${app.config.PORT}`
}

/** GET /docs/asyncapi.json: the WebSocket protocol, built once from the dispatcher's registry. */
export default async function asyncApiRoute (app: FastifyInstance, opts: AsyncApiRouteOptions) {
  let doc: ReturnType<typeof asyncApiDocument> | undefined
  app.get('/docs/asyncapi.json', { schema: { hide: true } }, async () => {
    doc ??= asyncApiDocument({
      clientMessages: app.dispatcher.schemas,
      version: opts.version ?? '1.0.0',
      host: listenHost(app)
    })
    return doc
  })
}
