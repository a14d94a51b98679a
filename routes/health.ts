import type { FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'

const Health = Type.Object({ status: Type.Literal('ok') }, { description: 'The process is up' })
const Ready = Type.Object({ status: Type.String(), problems: Type.Optional(Type.Array(Type.String())) }, { description: '`ready`' })
const NotReady = Type.Object({ status: Type.String(), problems: Type.Optional(Type.Array(Type.String())) }, { description: '`shutting_down`, or `not_ready` with the `problems` (e.g. Redis unreachable)' })
const probe = { tags: ['health'], security: [] }

/** Liveness and readiness for load balancers and orchestrators: never rate limited. */
export default async function healthRoutes (app: FastifyInstance) {
  app.get('/health', { config: { answersWhileClosing: true }, schema: { ...probe, summary: 'Liveness', description: 'Answers 200 while the process runs. Not rate limited, no token needed.', response: { 200: Health } } }, async () => ({ status: 'ok' as const }))

  app.get('/ready', {
    config: { answersWhileClosing: true },
    schema: { ...probe, summary: 'Readiness', description: 'Whether this instance should get traffic: 503 while shutting down or while a configured Redis is unreachable. Not rate limited, no token needed.', response: { 200: Ready, 503: NotReady } }
  }, async (_request, reply) => {
    const problems = app.statusReport.problems()
    if (app.statusReport.shuttingDown) return reply.code(503).send({ status: 'shutting_down' })
    if (problems.length > 0) return reply.code(503).send({ status: 'not_ready', problems })
    return { status: 'ready' }
  })
}
