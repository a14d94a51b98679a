/**
 * Switchboard as `server.ts` builds it, configured by the environment the
 * runner passes (limits raised for load, LOG_LEVEL=warn, REDIS_URL for S8, REDIS_CLUSTER_NODES for S13),
 * plus the runner's IPC.
 */
// first, as in server.ts: V8 settings before any other module is evaluated
import '../../plugins/core/heap.js'
import Fastify from 'fastify'
import app, { serverOptions } from '../../app.js'
import { loadConfig } from '../../plugins/core/config.js'
import { announce, type ServerStats } from './control.js'

const config = loadConfig(process.env)
const server = Fastify(serverOptions(config))
// BENCH_PERSIST_MESSAGES=false: the rooms option persistMessages=false (no history writes)
await server.register(app, { config, rooms: { persistMessages: process.env.BENCH_PERSIST_MESSAGES !== 'false' } })
await server.listen({ port: config.PORT, host: config.HOST })
const address = server.server.address()

/**
 * The instance's own switchboard_redis_pubsub_messages_total, split by
 * direction, read from its /metrics (the app's decorations live in the app's
 * encapsulated context, out of this file's reach).
 */
async function stats (): Promise<ServerStats> {
  if (!config.REDIS_URL && !process.env.REDIS_CLUSTER_NODES) return { pubsubMessages: null, pubsubPublished: null }
  const res = await server.inject({ method: 'GET', url: '/metrics' })
  const sum = (direction: string) => {
    let n = 0
    for (const m of res.body.matchAll(/^switchboard_redis_pubsub_messages_total\{([^}]*)\} (\S+)$/gm)) {
      if (m[1].includes(`direction="${direction}"`)) n += Number(m[2])
    }
    return n
  }
  return { pubsubMessages: sum('received'), pubsubPublished: sum('published') }
}

announce(typeof address === 'object' && address ? address.port : 0, () => server.close(), stats)
