// first: V8 settings before any other module is evaluated
import './plugins/core/heap.js'
import Fastify from 'fastify'
import closeWithGrace from 'close-with-grace'
import pino, { type Logger } from 'pino'
import app, { serverOptions } from './app.js'
import { exitOnConfigError, loadConfig, type Config } from './plugins/core/config.js'
import { StoreOpenError } from './plugins/store/sqlite.js'

let config: Config
try {
  config = loadConfig(process.env)
} catch (err) {
  exitOnConfigError(err)
}

const server = Fastify(serverOptions(config))
// a feature switched on without its optional package is a configuration error too;
// the store's refusal (DATA_DIR held by another process, unusable file) is one line as well
try {
  await server.register(app, { config })
} catch (err) {
  if (err instanceof StoreOpenError) {
    process.stderr.write(`${err.message}\n`)
    process.exit(1)
  }
  exitOnConfigError(err)
}

closeWithGrace({
  delay: config.SHUTDOWN_GRACE_MS,
  logger: {
    error: (msg: unknown) => server.log.error({ event: 'shutdown.forced', detail: String(msg) }, 'forced exit')
  }
}, async ({ signal, err }) => {
  if (err) server.log.error({ event: 'process.error', err }, 'closing after an uncaught error')
  else server.log.info({ event: 'shutdown.step', step: 'signal', signal }, 'shutdown requested')
  await server.close()
  await logWritten(server.log as Logger)
})

/**
 * close-with-grace exits as soon as its handler resolves. pino's stdout stream
 * (sonic-boom, asynchronous) writes what is left synchronously at exit, which
 * can land ahead of a write still in flight on the thread pool: under load the
 * last shutdown lines came out of order, or could be cut off. `logger.flush()`
 * does not wait for that write (a no-op without minLength), so this waits for
 * the stream's 'drain' while it is writing, for at most a second.
 */
async function logWritten (logger: Logger): Promise<void> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { _writing?: boolean, once?: (event: 'drain', fn: () => void) => void } | undefined
  if (stream?._writing !== true || typeof stream.once !== 'function') return
  await new Promise<void>(resolve => {
    const timer = setTimeout(resolve, 1000)
    stream.once?.('drain', () => { clearTimeout(timer); resolve() })
  })
}

try {
  await server.listen({ port: config.PORT, host: config.HOST })
  const address = server.server.address()
  const port = typeof address === 'object' && address ? address.port : config.PORT
  server.log.info({ event: 'server.listening', port, host: config.HOST }, 'switchboard listening')
} catch (err) {
  server.log.error({ event: 'server.listen_failed', err }, 'could not listen')
  process.exit(1)
}
