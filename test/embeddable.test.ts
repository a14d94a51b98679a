import t from 'tap'
import Fastify from 'fastify'
import core, { redis } from '../plugins/core/index.js'
import { tracing } from '../plugins/observability/index.js'
import { auth, heartbeat, jsonLimits, proxy, reachability, sessions } from '../plugins/engine/index.js'
import { dispatcher } from '../plugins/native/index.js'
import { websocket } from '../plugins/http/index.js'
import store from '../plugins/store/index.js'
import cluster from '../plugins/cluster/index.js'
import messages from '../plugins/messages/index.js'
import rooms from '../plugins/rooms/index.js'
import { tempDir } from './support/helper.js'
import { TestClient } from './support/ws-client.js'

t.test('rooms and direct messages work in an app of one\'s own that registers the plugins they declare as dependencies', async t => {
  const app = Fastify()
  await app.register(core, { env: {}, status: { version: 'embedded' }, metrics: { defaultMetrics: false } })
  await app.register(tracing)
  await app.register(sessions)
  await app.register(auth)
  await app.register(heartbeat)
  await app.register(jsonLimits)
  // the application backend's hooks: none configured, every join and publish goes through
  await app.register(proxy)
  await app.register(websocket)
  await app.register(dispatcher)
  await app.register(redis)
  await app.register(cluster)
  await app.register(reachability)
  await app.register(store, { dataDir: tempDir(t) })
  await app.register(messages)
  await app.register(rooms)

  app.get('/ws', { websocket: true }, (socket, request) => { app.sessions.accept(socket, request) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const address = app.server.address()
  const wsUrl = `ws://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/ws`

  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  const bob = await TestClient.connect(wsUrl, { clientId: 'bob' })
  t.teardown(() => Promise.all([alice.close(), bob.close()]))
  t.match(alice.welcome, { type: 'welcome', clientId: 'alice', serverId: app.serverId, limits: { maxRoomsPerConnection: 50, roomNamePattern: String } }, 'connections.accept sends the welcome with the plugins\' limits')
  t.match(await alice.request({ type: 'join', room: 'lab' }), { type: 'joined', room: 'lab' })
  t.match(await bob.request({ type: 'join', room: 'lab' }), { type: 'joined', room: 'lab' })
  t.match(await alice.request({ type: 'publish', room: 'lab', data: { n: 1 } }), { type: 'ack', offset: 1 })
  t.match(await bob.next('room_message'), { room: 'lab', from: 'alice', data: { n: 1 } }, 'a room publish reaches the other member')
  t.match(await alice.request({ type: 'send', to: 'bob', text: 'hi' }), { type: 'ack', delivered: 1 })
  t.match(await bob.next('message'), { from: 'alice', to: 'bob', text: 'hi' }, 'a direct message is delivered')
  t.match(app.statusReport.report(), { connections: { total: 2, clients: 2 }, rooms: { active: 1 } }, 'each plugin wrote its own status section')
})
