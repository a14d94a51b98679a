// Switchboard's plugins inside a Fastify app of your own: WebSocket transport,
// connection limits, ping/pong with dead-peer detection, and a status route.
// Run after `npm run build`:  node examples/embed/server.mjs   (PORT, default 3000)
import Fastify from 'fastify'
import { identity, metrics, status } from 'switchboard/plugins/core'
import { tracing } from 'switchboard/plugins/observability'
import { heartbeat, jsonLimits, limits, sessions } from 'switchboard/plugins/engine'
import { dispatcher } from 'switchboard/plugins/native'
import { websocket } from 'switchboard/plugins/http'

const app = Fastify({ logger: { level: process.env.LOG_LEVEL ?? 'info' } })

await app.register(metrics)
await app.register(identity)
await app.register(status, { version: 'embedded' })
await app.register(tracing)
// the engine's sessions: the message rate, the send-buffer cap, token expiry and shutdown, for every protocol
await app.register(sessions, { messagesPerSecond: 20 })
await app.register(websocket, { maxPayload: 16384 })
await app.register(limits, { maxConnections: 100, maxPerClient: 5 })
await app.register(heartbeat, { intervalMs: 15000 })
await app.register(jsonLimits)
// the native protocol's codec: JSON frames with a `type`, validated, routed to handlers
await app.register(dispatcher)

// Your own message type, validated and rate limited like the built-in ones.
app.dispatcher.register('echo', {}, (_conn, msg) => ({ type: 'echo', ...msg }))

// connections and limits write their own status sections
app.get('/status', async () => app.statusReport.report())

// The socket wiring is the sessions plugin's, the welcome the native protocol's: the route only accepts.
app.get('/ws', { websocket: true, preHandler: [app.acquireConnectionSlot] }, (socket, request) => {
  app.sessions.accept(socket, request, { clientId: `guest-${Math.random().toString(36).slice(2, 8)}` })
})

const address = await app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '127.0.0.1' })
app.log.info({ event: 'embed.listening', address }, 'embedded switchboard plugins listening')
