import { Type } from '@sinclair/typebox'

/** Fastify's error shape, which every /api error keeps (fields may be added). */
export const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String()
}, { additionalProperties: true })
