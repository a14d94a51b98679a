import t from 'tap'
import { startServer } from './support/process.js'
import { TestClient } from './support/ws-client.js'
import { redisTestOptions, startRedis } from './support/redis-server.js'

t.test('SIGTERM with Redis: rooms flushed, then the store, the subscriber and the command connection close, in that order', redisTestOptions(), async t => {
  const redis = await startRedis(t)
  const srv = await startServer(t, { ...redis.env })
  const client = await TestClient.connect(srv.wsUrl, { clientId: 'alice' })
  await client.request({ type: 'join', room: 'r' })
  t.match(await client.request({ type: 'update', room: 'r', patch: { kept: true } }), { type: 'ack', version: 1 })
  t.equal(redis.cli('HLEN', 'sb:presence:{room:r}:u'), '1', 'alice is listed as a member in Redis')

  srv.proc.kill('SIGTERM')
  const exit = await srv.exited
  t.equal(exit.code, 0, 'exit code 0')
  const steps = srv.logs().filter(l => l.event === 'shutdown.step').map(l => l.step)
  t.same(steps, ['signal', 'notify_clients', 'clients_closed', 'rooms_flushed', 'store_closed', 'redis_subscriber_closed', 'redis_commands_closed', 'done'])
  t.same(srv.logs().filter(l => l.level >= 50), [], 'no error logs')

  t.equal(redis.cli('HGET', 'sb:room:r', 'state'), '{"kept":true}', 'the acknowledged state is in Redis')
  t.equal(redis.cli('HLEN', 'sb:presence:{room:r}:u'), '0', 'the instance withdrew its members')
  t.equal(redis.cli('KEYS', 'sb:instance:*'), '', 'and its heartbeat key')
})
