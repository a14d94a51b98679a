import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'

export interface OpenApiOptions {
  /** API version shown in the document [the package version]. */
  version?: string
  /** Where the UI is served; the JSON document is at `${prefix}/json` ['/docs']. */
  routePrefix?: string
}

/**
 * OpenAPI 3 generated from the route schemas. Registered before the routes so
 * every route is seen; the WebSocket protocol is described in docs/protocol.md.
 */
export default fp<OpenApiOptions>(async function openapi (app, opts) {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Switchboard HTTP API',
        description: 'Direct messages, rooms and status over HTTP. Every /api route is also served under /api/v1. The WebSocket protocol (GET /ws) is described in docs/protocol.md.',
        version: opts.version ?? '1.0.0'
      },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } }
      },
      security: [{ bearer: [] }]
    }
  })
  await app.register(swaggerUi, { routePrefix: opts.routePrefix ?? '/docs', uiConfig: { docExpansion: 'list' } })
}, { name: 'openapi', fastify: '5.x' })
