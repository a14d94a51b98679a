import type { FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'

/** Prometheus text for this instance; with several instances each exposes its own (sum them in queries). */
export default async function metricsRoute (app: FastifyInstance) {
  app.get('/metrics', {
    config: { metrics: false },
    schema: {
      tags: ['health'],
      security: [],
      summary: 'Prometheus metrics',
      description: 'Prometheus metrics of this instance (text exposition format). Not rate limited, no token needed; with several instances, scrape each.',
      produces: ['text/plain'],
      response: { 200: Type.String({ description: 'Prometheus text format 0.0.4' }) }
    }
  }, async (_request, reply) => {
    const body = await app.metrics.render()
    return reply.type(app.metrics.contentType).send(body)
  })
}
