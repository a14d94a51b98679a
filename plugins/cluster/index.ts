import fp from 'fastify-plugin'
import { LocalBroker, RedisBroker, type Broker } from './broker.js'
import { LocalPresence, RedisPresence, type Presence } from './presence.js'
import { LocalClients, RedisClients, type ClientDirectory } from './clients.js'
import { LocalRequests, RedisRequests, type ClusterRequests } from './requests.js'

export { LocalBroker, RedisBroker, brokerChannel } from './broker.js'
export type { Broker, ChannelFrameHandler, Sequence } from './broker.js'
export { LocalPresence, RedisPresence } from './presence.js'
export type { Presence, PresenceGoneHandler, JoinOutcome } from './presence.js'
export { LocalClients, RedisClients } from './clients.js'
export type { ClientDirectory, ClientFrameHandler } from './clients.js'
export { LocalClientSlots, RedisClientSlots } from './client-slots.js'
export type { ClientSlotCounter } from './client-slots.js'
export { LocalRequests, RedisRequests } from './requests.js'
export type { ClusterRequests, InstanceAnswer, RequestHandler } from './requests.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Frames to and from the other instances, by namespaced channel (a no-op one without REDIS_URL). */
    broker: Broker
    /** Who is in each channel on the other instances; cluster-wide transitions and caps. */
    presence: Presence
    /** Where each client id has sessions that direct messages reach, across the instances. */
    clients: ClientDirectory
    /** Questions to every live instance, this one included (the operator's views and actions). */
    clusterRequests: ClusterRequests
  }
}

/**
 * The other instances, chosen once: in memory on one node, through Redis with
 * REDIS_URL. This instance's entries leave Redis on close, after every plugin
 * registered later (the features, the protocols) has closed.
 */
export default fp(async function cluster (app) {
  const link = app.redisLink
  if (!link) {
    const clients = new LocalClients()
    app.decorate('broker', new LocalBroker())
    app.decorate('presence', new LocalPresence())
    app.decorate('clients', clients)
    app.decorate('clusterRequests', new LocalRequests(app.serverId))
    return
  }
  const pubsub = app.metrics.pubsubMessages
  const count = (direction: 'published' | 'received') => pubsub.inc({ direction })
  // first: its restorer subscribes first, so an instance that has opened any session also answers cluster requests
  const requests = new RedisRequests(link, app.log)
  const clients = new RedisClients(link, count, app.log)
  const broker = new RedisBroker(link, count, app.log)
  const presence = new RedisPresence(link, app.log)
  app.decorate('broker', broker)
  app.decorate('presence', presence)
  app.decorate('clients', clients)
  app.decorate('clusterRequests', requests)
  if (link.ready) link.restore().catch(() => {})
  app.statusReport.section('bus', () => ({ subscriptions: broker.channels.length, received: { room: broker.received, client: clients.received } }))
  app.addHook('onClose', async () => {
    // frames queued this turn still go out before this instance's entries do
    broker.flush()
    if (!link.ready) return
    const tx = link.batch()
    clients.withdraw(tx)
    presence.withdraw(tx)
    await tx.exec().catch(() => {})
  })
}, { name: 'cluster', fastify: '5.x', dependencies: ['redis', 'status', 'metrics'] })
