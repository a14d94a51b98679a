import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { root } from './process.js'

// No Docker engine runs here, so the deployment files are checked by reading them.

t.test('docker-compose.yml runs the app on 0.0.0.0 with a health check and a data volume', async t => {
  const compose = parse(readFileSync(join(root, 'docker-compose.yml'), 'utf8'))
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
