/**
 * Switchboard as `server.ts` builds it, configured by the environment the
 * runner passes (limits raised for load, LOG_LEVEL=warn), plus the runner's IPC.
 */
import Fastify from 'fastify'
import app, { serverOptions } from '../../app.js'
import { loadConfig } from '../../plugins/config.js'
import { announce } from './control.js'

const config = loadConfig(process.env)
const server = Fastify(serverOptions(config))
// BENCH_PERSIST_MESSAGES=false: the rooms option persistMessages=false (no history writes)
await server.register(app, { config, rooms: { persistMessages: process.env.BENCH_PERSIST_MESSAGES !== 'false' } })
await server.listen({ port: config.PORT, host: config.HOST })
const address = server.server.address()
announce(typeof address === 'object' && address ? address.port : 0, () => server.close())
