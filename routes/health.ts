import type { FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'

const Health = Type.Object({ status: Type.Literal('ok') })
const Ready = Type.Object({ status: Type.String(), problems: Type.Optional(Type.Array(Type.String())) })

/** Liveness and readiness for load balancers and orchestrators: never rate limited. */
export default async function healthRoutes (app: FastifyInstance) {
  app.get('/health', { config: { answersWhileClosing: true }, schema: { response: { 200: Health } } }, async () => ({ status: 'ok' as const }))

  app.get('/ready', { config: { answersWhileClosing: true }, schema: { response: { 200: Ready, 503: Ready } } }, async (_request, reply) => {
    const problems = app.statusReport.problems()
    if (app.statusReport.shuttingDown) return reply.code(503).send({ status: 'shutting_down' })
    if (problems.length > 0) return reply.code(503).send({ status: 'not_ready', problems })
    return { status: 'ready' }
  })
}
