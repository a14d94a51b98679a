import type { FastifyInstance } from 'fastify'
import securityHeaders from './security-headers.js'
import webConsole, { type ConsoleOptions } from './console.js'

/**
 * The pages a browser opens (the console at `/`, `/admin`, the files of
 * public/) in their own encapsulated context, with the security headers of
 * ./security-headers.ts; the API's JSON responses stay outside it.
 */
export default async function pages (app: FastifyInstance, opts: ConsoleOptions) {
  await app.register(securityHeaders)
  await app.register(webConsole, opts)
}
