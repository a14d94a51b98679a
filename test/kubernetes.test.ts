import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { root } from './support/process.js'

// No cluster runs here: the manifests are checked by reading them, for what an operator relies on.
const dir = join(root, 'deploy', 'kubernetes')
const manifest = (file: string) => parse(readFileSync(join(dir, file), 'utf8'))
const deployment = manifest('deployment.yaml')
const service = manifest('service.yaml')
const pdb = manifest('pdb.yaml')
const pod = deployment.spec.template.spec
const container = pod.containers[0]
const env = new Map<string, { value?: string, valueFrom?: unknown }>(container.env.map((e: { name: string }) => [e.name, e]))
const matches = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v)

t.test('the Deployment listens on 0.0.0.0 on the port its probes and the Service use', async t => {
  t.equal(deployment.kind, 'Deployment')
  t.equal(deployment.apiVersion, 'apps/v1')
  t.equal(env.get('HOST')?.value, '0.0.0.0', 'every interface inside the pod')
  const http = container.ports.find((p: { name: string }) => p.name === 'http')
  t.equal(http?.containerPort, Number(env.get('PORT')?.value), 'the named port is PORT')
  t.equal(http?.containerPort, 5001)
  for (const [name, probe] of [['liveness', container.livenessProbe], ['readiness', container.readinessProbe], ['startup', container.startupProbe]]) {
    t.equal(probe?.httpGet?.port, 'http', `${name} probe on the named port`)
  }
  t.equal(container.livenessProbe.httpGet.path, '/health', 'liveness: /health (the process answers)')
  t.equal(container.readinessProbe.httpGet.path, '/ready', 'readiness: /ready (503 while shutting down or without its Redis)')
  t.equal(container.startupProbe.httpGet.path, '/health')
})

t.test('the grace period outlasts the preStop pause plus SHUTDOWN_GRACE_MS', async t => {
  const graceMs = Number(env.get('SHUTDOWN_GRACE_MS')?.value)
  t.ok(graceMs > 0, `SHUTDOWN_GRACE_MS is set (${graceMs})`)
  const command: string[] = container.lifecycle?.preStop?.exec?.command ?? []
  t.equal(command[0], 'sleep', 'a preStop pause, so the endpoint leaves the Service before SIGTERM')
  const pauseMs = Number(command[1]) * 1000
  t.ok(pauseMs > 0, `${pauseMs} ms`)
  const terminationMs = pod.terminationGracePeriodSeconds * 1000
  t.ok(terminationMs > pauseMs + graceMs, `terminationGracePeriodSeconds (${terminationMs} ms) > preStop (${pauseMs} ms) + SHUTDOWN_GRACE_MS (${graceMs} ms)`)
})

t.test('several replicas share Redis, and the labels tie the Deployment, the Service and the budget together', async t => {
  t.ok(deployment.spec.replicas > 1, 'more than one replica')
  t.ok(env.get('REDIS_URL')?.valueFrom ?? env.get('REDIS_URL')?.value, 'so REDIS_URL is set (one SQLite file per pod is not shared)')
  t.match(readFileSync(join(dir, 'deployment.yaml'), 'utf8'), /REDIS_URL/, 'and the manifest says why')
  t.match(readFileSync(join(dir, 'README.md'), 'utf8'), /Several replicas need `REDIS_URL`/, 'as the README does')
  const podLabels = deployment.spec.template.metadata.labels
  t.ok(matches(deployment.spec.selector.matchLabels, podLabels), 'the Deployment selects its own pods')
  t.equal(service.kind, 'Service')
  t.ok(matches(service.spec.selector, podLabels), 'the Service selects them')
  t.same(service.spec.ports.map((p: { targetPort: string }) => p.targetPort), ['http'], 'and sends to the named port')
  t.equal(pdb.kind, 'PodDisruptionBudget')
  t.equal(pdb.apiVersion, 'policy/v1')
  t.ok(matches(pdb.spec.selector.matchLabels, podLabels), 'the budget covers the same pods')
  t.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < deployment.spec.replicas, `a drain keeps ${pdb.spec.minAvailable} of ${deployment.spec.replicas} replicas`)
})

t.test('the pod runs unprivileged with its secrets from a Secret', async t => {
  t.equal(pod.securityContext.runAsNonRoot, true)
  t.equal(container.securityContext.allowPrivilegeEscalation, false)
  t.ok(container.volumeMounts.some((m: { mountPath: string }) => m.mountPath === env.get('DATA_DIR')?.value), 'DATA_DIR is a mounted volume (the root filesystem is read-only)')
  for (const name of ['REDIS_URL', 'AUTH_SECRET']) {
    t.ok((env.get(name)?.valueFrom as { secretKeyRef?: unknown } | undefined)?.secretKeyRef, `${name} comes from a Secret, not the manifest`)
  }
})
