import type { FastifyInstance } from 'fastify'
import { Type } from '@sinclair/typebox'
import { commonErrors } from './errors.js'

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
  admin: Type.Optional(Type.Object({ enabled: Type.Boolean({ description: 'whether the admin API (/api/admin/*) exists: ADMIN_TOKEN, ADMIN_READONLY_TOKEN or auth mode' }) }, Open)),
  problems: Type.Optional(Type.Array(Type.String()))
}, { ...Open, description: 'This instance; `status` is `degraded` when a dependency (Redis) is down, with the reasons in `problems`' })

export default async function statusRoute (app: FastifyInstance) {
  app.get('/status', {
    schema: {
      tags: ['status'],
      summary: 'Status of this instance',
      description: 'This instance: connections against the limits, rooms, Redis, rate limit, code execution. With several instances, each reports its own.',
      response: { 200: StatusBody, ...commonErrors }
    }
  }, async () => app.statusReport.report())
}
