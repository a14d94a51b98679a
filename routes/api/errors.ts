import { ErrorRef } from '../../plugins/errors.js'

/** Fastify's error shape plus `code`, which every /api error keeps (fields may be added): the shared `Error` schema. */
export const ErrorBody = ErrorRef
