import fp from 'fastify-plugin'
import fastifyStatic from '@fastify/static'
import { createReadStream, existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

export interface ConsoleOptions {
  /** The folder served at `/` [public/ at the package root]. */
  root?: string
}

// dist/plugins/http/console.js → the package root is three levels up
const defaultRoot = fileURLToPath(new URL('../../../public', import.meta.url))

/** The web console: public/ at `/`, with the bundle `npm run build` writes to public/build/. */
export default fp<ConsoleOptions>(async function webConsole (app, opts) {
  const root = opts.root ?? defaultRoot
  if (!existsSync(join(root, 'build', 'console.js'))) {
    app.log.warn({ event: 'console.not_built', root }, 'the web console bundle is missing; run npm run build')
  }
  // the operator's page: public like the console (it signs in to the admin API with a token it asks for)
  app.get('/admin', { schema: { hide: true } }, async (_request, reply) => {
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(createReadStream(join(root, 'admin.html')))
  })
  await app.register(fastifyStatic, {
    root,
    prefix: '/',
    index: 'index.html',
    decorateReply: false,
    // the page and bundle change with every build; let browsers revalidate
    cacheControl: true,
    maxAge: 0
  })
}, { name: 'console', fastify: '5.x' })
