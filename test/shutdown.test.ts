import t from 'tap'
import { join } from 'node:path'
import { startServer, root, freePort } from './support/process.js'
import { stubbornClient, TestClient, tryUpgrade } from './support/ws-client.js'
import { tempDir, waitFor } from './support/helper.js'

t.test('SIGTERM: every client gets server_shutdown then close 1001, and the process exits 0', async t => {
  const srv = await startServer(t, { DATA_DIR: tempDir(t), MAX_CONNECTIONS_PER_CLIENT: '100' })
  const clients = await Promise.all(Array.from({ length: 20 }, (_, i) => TestClient.connect(srv.wsUrl, { clientId: `c${i}` })))
  const order: string[][] = clients.map(() => [])
  clients.forEach((c, i) => {
    c.ws.on('message', d => order[i].push(JSON.parse(d.toString()).type))
    c.ws.on('close', code => order[i].push(`close:${code}`))
  })
  const started = Date.now()
  srv.proc.kill('SIGTERM')
  const exit = await srv.exited
  const took = Date.now() - started
  t.equal(exit.code, 0, 'exit code 0')
  t.ok(took < 10000, `within SHUTDOWN_GRACE_MS (${took} ms)`)
  for (let i = 0; i < clients.length; i++) {
    const closed = await clients[i].closed
    t.equal(closed.code, 1001, `client ${i} closed with 1001`)
    t.same(order[i], ['server_shutdown', 'close:1001'], `client ${i} was told first`)
  }
  const notice = clients[0].all('server_shutdown')[0]
  t.match(notice, { type: 'server_shutdown', reason: String, reconnectAfterMs: Number, timestamp: /Z$/ })
  const logs = srv.logs()
  t.same(logs.filter(l => l.level >= 50), [], 'no error logs')
  const steps = logs.filter(l => l.event === 'shutdown.step').map(l => l.step)
  t.same(steps, ['signal', 'notify_clients', 'clients_closed', 'rooms_flushed', 'store_closed', 'done'], 'each step is logged in order: clients, then rooms persisted before the store closes')
  t.equal(srv.stderr(), '')
})

t.test('while shutting down new upgrades get 503, and a second signal exits at once with 1', async t => {
  const srv = await startServer(t, { DATA_DIR: tempDir(t), SHUTDOWN_GRACE_MS: '8000' })
  const stubborn = await stubbornClient(srv.port)
  t.teardown(() => { stubborn.destroy() })
  srv.proc.kill('SIGTERM')
  // the stubborn client never answers the close frame, so the server waits for it (up to its close timeout)
  await waitFor(() => srv.logs().some(l => l.event === 'shutdown.step' && l.step === 'notify_clients'), 'the shutdown to tell the clients')
  const during = await tryUpgrade(srv.wsUrl)
  t.equal(during.status, 503, 'a new upgrade is refused with 503')
  srv.proc.kill('SIGTERM')
  const exit = await srv.exited
  t.equal(exit.code, 1, 'the second signal exits with 1')
  const steps = srv.logs().filter(l => l.event === 'shutdown.step').map(l => l.step)
  t.notOk(steps.includes('clients_closed') || steps.includes('terminate_stragglers'), `at once: without waiting for the stubborn client (steps: ${steps.join(', ')})`)
})

t.test('a stuck client is terminated after the close timeout and shutdown still exits 0', async t => {
  const srv = await startServer(t, { DATA_DIR: tempDir(t), SHUTDOWN_GRACE_MS: '3000' })
  const stubborn = await stubbornClient(srv.port)
  t.teardown(() => { stubborn.destroy() })
  srv.proc.kill('SIGTERM')
  const exit = await srv.exited
  t.equal(exit.code, 0)
  t.ok(srv.logs().some(l => l.event === 'shutdown.step' && l.step === 'terminate_stragglers' && l.terminated === 1), 'the straggler is logged')
})

t.test('under `fastify start dist/app.js` shutdown works the same', async t => {
  const port = await freePort()
  const srv = await startServer(t, { DATA_DIR: tempDir(t), FASTIFY_CLOSE_GRACE_DELAY: '5000' }, {
    // -o: use the `options` app.ts exports (logger, trustProxy, limits)
    args: [join(root, 'node_modules', 'fastify-cli', 'cli.js'), 'start', '-o', '-a', '127.0.0.1', '-p', String(port), join(root, 'dist', 'app.js')],
    readyPattern: /Server listening at http:\/\/127\.0\.0\.1:(\d+)/
  })
  const c = await TestClient.connect(srv.wsUrl, { clientId: 'cli' })
  const pong = await c.request({ type: 'ping' })
  t.equal(pong.type, 'pong')
  srv.proc.kill('SIGTERM')
  const exit = await srv.exited
  t.equal((await c.closed).code, 1001)
  t.equal(c.all('server_shutdown').length, 1)
  t.equal(exit.code, 0)
})
