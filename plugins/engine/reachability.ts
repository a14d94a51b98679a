import fp from 'fastify-plugin'

/**
 * Sessions reached by client id (native, and any protocol that says it is
 * addressable) are reachable from every instance before they are told they
 * are open: the cluster's client directory knows them first, so a direct
 * message sent after the welcome is delivered, never queued.
 */
export default fp(async function reachability (app) {
  const clients = app.clients
  app.sessions.addWelcomeGate({
    ready: session => clients.clientConnected(session.clientId),
    abandon: session => clients.clientDisconnected(session.clientId)
  })
  app.sessions.onClose(session => { if (session.protocol.addressable === true) clients.clientDisconnected(session.clientId) })
}, { name: 'reachability', fastify: '5.x', dependencies: ['sessions', 'cluster'] })
