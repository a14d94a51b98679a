import type { FastifyInstance } from 'fastify'
import sendRoute from './send.js'
import statusRoute from './status.js'
import roomRoutes from './rooms.js'
import adminRoutes from './admin.js'
import docsRoutes from './docs.js'

export interface ApiOptions {
  /** Set on the unversioned mount: the prefix it is an alias of, so its routes are documented as aliases. */
  aliasOf?: string
}

/** The HTTP API; app.ts mounts it twice, at /api/v1 and (as its alias) /api, from this one definition. */
export default async function api (app: FastifyInstance, opts: ApiOptions) {
  const aliasOf = opts.aliasOf
  if (aliasOf !== undefined) {
    // documented once, under /api/v1; here every operation is a pointer to it, under its own tag
    app.addHook('onRoute', routeOptions => {
      const target = `${routeOptions.method} ${aliasOf}${routeOptions.url.slice(app.prefix.length).replace(/:(\w+)/g, '{$1}')}`
      routeOptions.schema = {
        ...routeOptions.schema,
        tags: ['unversioned alias'],
        summary: `Alias of ${target}`,
        description: `The same route as ${target}, served without the version in the path. Prefer ${aliasOf}.`
      }
    })
  }
  await app.register(sendRoute)
  await app.register(statusRoute)
  await app.register(roomRoutes)
  await app.register(adminRoutes)
  await app.register(docsRoutes)
}
