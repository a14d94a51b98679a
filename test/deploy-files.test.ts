import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { root } from './support/process.js'

// No Docker engine runs here, so the deployment files are checked by reading them.

t.test('docker-compose.single.yml runs one node on SQLite on 0.0.0.0 with a health check and a data volume', async t => {
  const compose = parse(readFileSync(join(root, 'docker-compose.single.yml'), 'utf8'))
  const app = compose.services.app
  t.ok(app, 'an app service')
  t.ok(app.build, 'built from the Dockerfile')
  t.equal(app.environment.HOST, '0.0.0.0', 'listens on every interface inside the container')
  t.match(app.healthcheck.test.join(' '), /\/health/, 'health check on /health')
  const volume = (app.volumes as string[]).find(v => v.endsWith(':/data'))
  t.ok(volume, 'DATA_DIR is on a volume')
  t.equal(app.environment.DATA_DIR, '/data')
  t.ok(compose.volumes[volume!.split(':')[0]] !== undefined, 'the named volume is declared')
  const grace = Number(app.environment.SHUTDOWN_GRACE_MS)
  const stop = Number(/^(\d+)s$/.exec(app.stop_grace_period)?.[1]) * 1000
  t.ok(stop > grace, `docker waits (${stop} ms) longer than the shutdown grace (${grace} ms)`)
  t.notOk(app.environment.REDIS_URL, 'no Redis: the embedded store')
  for (const name of Object.keys(compose.services)) {
    t.ok(compose.services[name].healthcheck, `${name} has a health check`)
  }
})

t.test('docker-compose.yml runs two app replicas on one Redis behind a WebSocket-capable load balancer', async t => {
  const compose = parse(readFileSync(join(root, 'docker-compose.yml'), 'utf8'))
  const { redis, app, lb } = compose.services
  t.ok(redis && app && lb, 'redis, app and lb services')

  const redisArgs = (redis.command as string[]).join(' ')
  t.match(redisArgs, /--appendonly yes/, 'Redis keeps an append-only file')
  t.match(redisArgs, /--appendfsync (always|everysec)/, 'with an explicit fsync policy')
  t.ok((redis.volumes as string[]).some(v => v.endsWith(':/data')), 'on a volume')
  t.ok(compose.volumes[(redis.volumes as string[])[0].split(':')[0]] !== undefined, 'the named volume is declared')
  t.match(redis.healthcheck.test.join(' '), /redis-cli ping/)

  t.ok(app.build, 'the app is built from the Dockerfile')
  t.equal(app.deploy.replicas, 2, 'two replicas')
  t.equal(app.environment.HOST, '0.0.0.0')
  t.match(app.environment.REDIS_URL, /^redis:\/\/redis:6379/, 'the app uses the redis service')
  t.equal(app.depends_on.redis.condition, 'service_healthy', 'and waits for it to be healthy')
  t.notOk(app.ports, 'replicas publish no host port (the load balancer does)')
  t.match(app.healthcheck.test.join(' '), /\/ready/, 'replica health follows /ready, which fails while Redis is unreachable')
  const grace = Number(app.environment.SHUTDOWN_GRACE_MS)
  const stop = Number(/^(\d+)s$/.exec(app.stop_grace_period)?.[1]) * 1000
  t.ok(stop > grace, 'docker waits longer than the shutdown grace')

  t.same(lb.ports, ['5001:80'], 'the load balancer is the one published port')
  const mount = (lb.volumes as string[]).find(v => v.includes('nginx.conf'))
  t.ok(mount, 'the nginx configuration is mounted')
  const conf = readFileSync(join(root, mount!.split(':')[0]), 'utf8')
  t.match(conf, /server app:5001/, 'it balances over the app service')
  t.match(conf, /proxy_set_header Upgrade \$http_upgrade/, 'it passes WebSocket upgrades')
  t.match(conf, /proxy_set_header Connection \$connection_upgrade/)
  t.match(conf, /proxy_http_version 1\.1/)
  t.equal(app.environment.TRUST_PROXY, '1', 'the app trusts the one proxy hop for client addresses')

  for (const name of Object.keys(compose.services)) {
    t.ok(compose.services[name].healthcheck, `${name} has a health check`)
  }
})

t.test('Dockerfile is multi-stage, runs as a non-root user and checks /health', async t => {
  const lines = readFileSync(join(root, 'Dockerfile'), 'utf8').split('\n').filter(l => !l.startsWith('#'))
  const from = lines.filter(l => l.startsWith('FROM '))
  t.ok(from.length >= 2, 'at least two stages')
  t.ok(from.every(l => /node:20/.test(l)), 'Node 20 in every stage (better-sqlite3@12 binary built for it)')
  const user = lines.filter(l => l.startsWith('USER ')).pop()
  t.ok(user && !/root|\b0\b/.test(user), `runs as ${user}`)
  const text = lines.join('\n')
  t.match(text, /HEALTHCHECK[\s\S]*\/health/)
  t.match(text, /CMD \["node", "dist\/server\.js"\]/)
  t.match(text, /npm ci/)
  t.match(text, /COPY --from=build/)
})
