import type { FastifyInstance } from 'fastify'

export default async function statusRoute (app: FastifyInstance) {
  app.get('/status', async () => app.statusReport.report())
}
