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
 * every route is seen; the WebSocket protocol is the AsyncAPI document at
 * /docs/asyncapi.json (routes/asyncapi.ts).
 */
export default fp<OpenApiOptions>(async function openapi (app, opts) {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Switchboard HTTP API',
        description: [
          'Direct messages, rooms and status over HTTP, for backends. The routes are documented under /api/v1; /api serves the same routes unversioned (tag "unversioned alias").',
          '',
          'Errors: every error reply is the `Error` schema, `{"statusCode","error","code","message"}` plus details; `code` is machine-readable and `message` names the field and the limit, worded as over WebSocket.',
          '',
          'Auth mode (AUTH_SECRET set): every /api route needs `Authorization: Bearer <jwt>`. Rate limit: RATE_LIMIT_MAX requests per RATE_LIMIT_WINDOW_MS per client, 429 past it.',
          '',
          'The WebSocket protocol (GET /ws) is described by the AsyncAPI 3 document at /docs/asyncapi.json.'
        ].join('\n'),
        version: opts.version ?? '1.0.0'
      },
      tags: [
        { name: 'messages', description: 'Direct messages to clients, delivered live or queued while they are offline' },
        { name: 'rooms', description: 'Rooms: list, describe, publish, update the shared JSON state' },
        { name: 'status', description: 'What this instance holds and how it is doing' },
        { name: 'documents', description: 'Collaborative Yjs documents for backends: read as JSON or as a Yjs update, apply an update (editors use /yjs/* and /collab: docs/collab.md)' },
        { name: 'health', description: 'Probes and metrics for load balancers, orchestrators and Prometheus; no token, no rate limit' },
        { name: 'unversioned alias', description: 'The /api routes: the same as /api/v1, without the version in the path' }
      ],
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'only when the server runs with AUTH_SECRET' } }
      },
      security: [{ bearer: [] }]
    },
    // shared schemas keep their $id as their component name (#/components/schemas/Error)
    refResolver: {
      buildLocalReference (json, _baseUri, _fragment, i) {
        return typeof json.$id === 'string' ? json.$id : `def-${i}`
      }
    }
  })
  await app.register(swaggerUi, { routePrefix: opts.routePrefix ?? '/docs', uiConfig: { docExpansion: 'list' } })
}, { name: 'openapi', fastify: '5.x' })
