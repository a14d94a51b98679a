import fp from 'fastify-plugin'
import dispatcher, { type DispatcherOptions } from './dispatcher.js'

export { default as dispatcher, Dispatcher, RequestId } from './dispatcher.js'
export { default as nativeBackend } from './backend.js'
export type { DispatcherOptions, MessageHandler, AroundMessage, DispatchEvent, RoutedMessage, MessageOutcome } from './dispatcher.js'

/**
 * The native protocol (/ws): JSON frames with a `type`, parsed, validated and
 * routed by the dispatcher to the handlers the features register (rooms,
 * direct messages, code execution). routes/ws.ts declares its endpoint.
 */
export default fp<DispatcherOptions>(async function native (app, opts) {
  await app.register(dispatcher, opts)
}, { name: 'native', fastify: '5.x', dependencies: ['sessions'] })
