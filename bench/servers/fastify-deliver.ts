/**
 * The S6 floor: bare Fastify answering `POST /api/send` by delivering the
 * message to the WebSocket client it names (a bare `ws` server on the same
 * HTTP server), then `{"delivered":1}`. No guard, no validation, no id: what
 * any server that delivers the message pays beyond bare Fastify's reply.
 */
import Fastify from 'fastify'
import { WebSocketServer, type WebSocket } from 'ws'
import { announce } from './control.js'

const server = Fastify({ logger: false })
const clients = new Map<string, WebSocket>()
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false })
server.server.on('upgrade', (req, socket, head) => {
  const clientId = new URL(req.url ?? '/', 'http://x').searchParams.get('clientId') ?? 'anonymous'
  wss.handleUpgrade(req, socket, head, ws => {
    clients.set(clientId, ws)
    ws.on('close', () => clients.delete(clientId))
    // the generator's clients wait for Switchboard's welcome frame
    ws.send(JSON.stringify({ type: 'welcome', clientId }))
  })
})
server.post('/api/send', async request => {
  const { from, to, text } = request.body as { from: string, to: string, text: string }
  const ws = clients.get(to)
  if (ws === undefined) return { delivered: 0 }
  ws.send(JSON.stringify({ type: 'message', from, to, text }))
  return { delivered: 1 }
})
await server.listen({ port: 0, host: '127.0.0.1' })
const address = server.server.address()
announce(typeof address === 'object' && address ? address.port : 0, () => server.close())
