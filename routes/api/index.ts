import type { FastifyInstance } from 'fastify'
import sendRoute from './send.js'
import statusRoute from './status.js'
import roomRoutes from './rooms.js'

/** The HTTP API; app.ts mounts it twice, at /api and /api/v1, from this one definition. */
export default async function api (app: FastifyInstance) {
  await app.register(sendRoute)
  await app.register(statusRoute)
  await app.register(roomRoutes)
}
