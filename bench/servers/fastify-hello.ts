/** The S6 yardstick: bare Fastify answering a JSON POST on the same route, no plugins. */
import Fastify from 'fastify'
import { announce } from './control.js'

const server = Fastify({ logger: false })
server.post('/api/send', async () => ({ hello: 'world' }))
await server.listen({ port: 0, host: '127.0.0.1' })
const address = server.server.address()
announce(typeof address === 'object' && address ? address.port : 0, () => server.close())
