import type { FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'

const Open = { additionalProperties: true }
export const StatusBody = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('degraded'), Type.Literal('shutting_down')]),
  version: Type.String(),
  uptimeSeconds: Type.Integer(),
  connections: Type.Object({ total: Type.Integer(), max: Type.Integer(), perClientMax: Type.Integer(), clients: Type.Integer() }, Open),
  rooms: Type.Object({ active: Type.Integer() }, Open),
  redis: Type.Object({ enabled: Type.Boolean(), status: Type.String() }, Open),
  rateLimit: Type.Object({ max: Type.Integer(), windowMs: Type.Integer() }, Open),
  codeExecution: Type.Object({ enabled: Type.Boolean() }, Open),
  problems: Type.Optional(Type.Array(Type.String()))
}, Open)

export default async function statusRoute (app: FastifyInstance) {
  app.get('/status', {
    schema: {
      description: 'This instance: connections against the limits, rooms, Redis, rate limit, code execution',
      response: { 200: StatusBody }
    }
  }, async () => app.statusReport.report())
}
