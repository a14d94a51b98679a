import Fastify from 'fastify'
import closeWithGrace from 'close-with-grace'
import app, { serverOptions } from './app.js'
import { ConfigError, loadConfig, type Config } from './plugins/config.js'

let config: Config
try {
  config = loadConfig(process.env)
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  process.stderr.write(`${err.message}\n`)
  process.exit(1)
}

const server = Fastify(serverOptions(config))
await server.register(app, { config })

closeWithGrace({
  delay: config.SHUTDOWN_GRACE_MS,
  logger: {
    error: (msg: unknown) => server.log.error({ event: 'shutdown.forced', detail: String(msg) }, 'forced exit')
  }
}, async ({ signal, err }) => {
  if (err) server.log.error({ event: 'process.error', err }, 'closing after an uncaught error')
  else server.log.info({ event: 'shutdown.step', step: 'signal', signal }, 'shutdown requested')
  await server.close()
})

try {
  await server.listen({ port: config.PORT, host: config.HOST })
  const address = server.server.address()
  const port = typeof address === 'object' && address ? address.port : config.PORT
  server.log.info({ event: 'server.listening', port, host: config.HOST }, 'switchboard listening')
} catch (err) {
  server.log.error({ event: 'server.listen_failed', err }, 'could not listen')
  process.exit(1)
}
