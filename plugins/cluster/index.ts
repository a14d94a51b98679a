import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Bus } from './bus.js'
import { LocalFanout, type Fanout } from './fanout.js'
import { LocalRequests, RedisRequests, type ClusterRequests } from './requests.js'

export * from './fanout.js'
export { Bus } from './bus.js'
export { RedisClientSlots } from './client-slots.js'
export { LocalRequests, RedisRequests } from './requests.js'
export type { ClusterRequests, InstanceAnswer, RequestHandler } from './requests.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Delivery to and from the other instances (a no-op one without REDIS_URL). */
    fanout: Fanout
    /** The Redis fanout, for status and tests; null when REDIS_URL is unset. */
    bus: Bus | null
    /** Questions to every live instance, this one included (the operator's views and actions). */
    clusterRequests: ClusterRequests
  }
}

/**
 * Decorates `fanout` before rooms and direct messages register: they get it
 * at construction. The Redis one withdraws this instance's entries on close.
 */
/** A client is reachable from every instance before its welcome: a message sent after it is delivered, never queued. */
function reachableBeforeWelcome (app: FastifyInstance, fanout: Fanout): void {
  app.connections.addWelcomeGate({
    ready: conn => fanout.clientConnected(conn.clientId),
    abandon: conn => fanout.clientDisconnected(conn.clientId)
  })
}

export default fp(async function fanout (app) {
  const link = app.redisLink
  if (!link) {
    const local = new LocalFanout()
    app.decorate('fanout', local)
    app.decorate('bus', null)
    app.decorate('clusterRequests', new LocalRequests(app.serverId))
    reachableBeforeWelcome(app, local)
    return
  }
  const pubsub = app.hasDecorator('metrics') ? app.metrics.pubsubMessages : undefined
  // before the bus: its restorer subscribes first, so an instance that has sent any welcome also answers cluster requests
  const requests = new RedisRequests(link, app.log)
  const bus = new Bus(link, direction => pubsub?.inc({ direction }), app.log)
  app.decorate('fanout', bus)
  app.decorate('bus', bus)
  app.decorate('clusterRequests', requests)
  reachableBeforeWelcome(app, bus)
  app.connections.onClose(conn => { if (conn.protocol.addressable === true) bus.clientDisconnected(conn.clientId) })
  app.statusReport.section('bus', () => ({ subscriptions: bus.channels.length, received: bus.received }))
  app.addHook('onClose', async () => {
    await bus.withdraw()
  })
}, { name: 'fanout', fastify: '5.x', dependencies: ['redis', 'connections', 'status'] })
