import t from 'tap'
import { trace, SpanStatusCode } from '@opentelemetry/api'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { build, requestJson, waitFor } from './support/helper.js'
import { TestClient } from './support/ws-client.js'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { tracedBatches } from '../plugins/observability/tracing.js'
import { tracingEnabled } from '../app.js'

function recorder () {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  return { exporter, provider, spans: () => exporter.getFinishedSpans() }
}

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId

/** The spans from `span` up to its trace's root, by parent id. */
function ancestry (span: ReadableSpan, all: ReadableSpan[]): ReadableSpan[] {
  const chain: ReadableSpan[] = []
  let current: ReadableSpan | undefined = span
  while (current) {
    chain.push(current)
    const parentId = parentOf(current)
    current = parentId === undefined ? undefined : all.find(s => s.spanContext().spanId === parentId)
  }
  return chain
}

t.test('with tracing off no span is recorded, not even into a global provider', async t => {
  const { exporter, provider } = recorder()
  trace.setGlobalTracerProvider(provider)
  t.teardown(() => trace.disable())

  const { app, url, wsUrl } = await build(t)
  t.equal(app.tracing.enabled, false)
  t.equal(app.dispatcher.around, undefined, 'messages run without a wrapper')
  t.equal(app.store.batchTracer, undefined, 'commits run without a wrapper')

  const res = await requestJson(`${url}/api/send`, 'POST', { from: 'svc', to: 'offline-bob', text: 'hello' })
  t.equal(res.status, 200)
  t.equal(res.body.queued, true)
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())
  await alice.request({ type: 'join', room: 'r' })
  await alice.request({ type: 'publish', room: 'r', data: 1 })
  await app.store.flush()
  t.equal(exporter.getFinishedSpans().length, 0)
})

t.test('POST /api/send: the HTTP span is the ancestor of the store commit that queues the message', async t => {
  const { provider, spans } = recorder()
  const { app, url } = await build(t, {}, { app: { tracing: { tracerProvider: provider } } })
  t.equal(app.tracing.enabled, true)

  const res = await requestJson(`${url}/api/send?token=not-a-real-token`, 'POST', { from: 'svc', to: 'offline-bob', text: 'hello' })
  t.equal(res.status, 200)
  t.equal(res.body.queued, true, 'bob is offline: the message goes to the store')

  await waitFor(() => spans().some(s => s.name === 'request'), 'the request span')
  const all = spans()
  const request = all.find(s => s.name === 'request') as ReadableSpan
  t.match(request.attributes, { 'http.route': '/api/send', 'http.request.method': 'POST', 'http.response.status_code': 200 })
  t.equal(request.attributes['url.path'], '/api/send', 'the query (where a token may be) is not recorded')
  t.equal(parentOf(request), undefined, 'the request starts its trace')

  const commit = all.find(s => s.name === 'store.commit')
  t.ok(commit, 'the inbox write has a span')
  if (!commit) return
  t.equal(commit.spanContext().traceId, request.spanContext().traceId, 'in the request\'s trace')
  const chain = ancestry(commit, all)
  t.ok(chain.includes(request), `the request span is an ancestor (chain: ${chain.map(s => s.name).join(' <- ')})`)
  t.match(commit.attributes, { 'db.system.name': 'sqlite', 'switchboard.store.writes': 1 })
  t.equal(all.filter(s => s.spanContext().traceId === request.spanContext().traceId).every(s => s.endTime[0] > 0), true, 'every span of the trace ended')
})

t.test('a WebSocket publish: a span per message (type, room, outcome), parent of its store commit', async t => {
  const { provider, spans } = recorder()
  const { wsUrl } = await build(t, {}, { app: { tracing: { tracerProvider: provider } } })
  const alice = await TestClient.connect(wsUrl, { clientId: 'alice' })
  t.teardown(() => alice.close())

  t.equal(spans().filter(s => s.name === 'request').length, 0, 'the upgrade request has no span: each message has its own')

  await alice.request({ type: 'join', room: 'lobby' })
  const ack = await alice.request({ type: 'publish', room: 'lobby', data: { n: 1 } })
  t.notOk(ack.type === 'error', 'the publish is accepted')
  const refused = await alice.request({ type: 'publish', room: 'elsewhere', data: 1 })
  t.equal(refused.code, 'not_in_room')

  await waitFor(() => spans().filter(s => s.name === 'ws publish').length === 2, 'two publish spans')
  const all = spans()
  const join = all.find(s => s.name === 'ws join') as ReadableSpan
  t.match(join.attributes, { 'switchboard.ws.type': 'join', 'switchboard.room': 'lobby', 'switchboard.ws.outcome': 'ok' })

  const [published, failed] = all.filter(s => s.name === 'ws publish')
  t.match(published.attributes, { 'switchboard.ws.type': 'publish', 'switchboard.room': 'lobby', 'switchboard.ws.outcome': 'ok' })
  t.equal(parentOf(published), undefined, 'each message starts its own trace')
  t.match(failed.attributes, { 'switchboard.room': 'elsewhere', 'switchboard.ws.outcome': 'not_in_room' })

  const commits = all.filter(s => s.name === 'store.commit' && parentOf(s) === published.spanContext().spanId)
  t.equal(commits.length, 1, 'the publish span is the parent of the commit of its message')
  t.equal(commits[0].spanContext().traceId, published.spanContext().traceId)
  t.equal(all.filter(s => s.name === 'store.commit' && parentOf(s) === failed.spanContext().spanId).length, 0, 'a refused publish writes nothing')
})

t.test('a batch of writes from several requests: child of the first, linked to the others', async t => {
  const { provider, spans } = recorder()
  const tracer = provider.getTracer('test')
  const batches = tracedBatches(tracer, 'sqlite')
  const first = tracer.startSpan('first')
  const second = tracer.startSpan('second')
  const origins = [first, second, first].map(span => trace.setSpan(trace.deleteSpan(batches.capture() as never), span))
  batches.trace([...origins, batches.capture()], 2, () => undefined)
  batches.trace([origins[1]], 1, () => new Error('disk I/O error'))

  const [ok, failed] = spans().filter(s => s.name === 'store.commit')
  t.equal(parentOf(ok), first.spanContext().spanId)
  t.same(ok.links.map(l => l.context.spanId), [second.spanContext().spanId], 'one link per other request, none for a write outside any trace')
  t.match(ok.attributes, { 'switchboard.store.writes': 4, 'switchboard.store.rooms': 2 })
  t.equal(failed.status.code, SpanStatusCode.ERROR)
  t.equal(failed.status.message, 'disk I/O error')
})

t.test('tracing is on when an OTLP endpoint or the switch is set, and off when the SDK is disabled', async t => {
  t.equal(tracingEnabled({}), false)
  t.equal(tracingEnabled({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }), true)
  t.equal(tracingEnabled({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }), true)
  t.equal(tracingEnabled({ OTEL_TRACES_ENABLED: 'true' }), true)
  t.equal(tracingEnabled({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'true' }), false)
})

t.test('with OTEL_EXPORTER_OTLP_ENDPOINT set, spans reach the collector over OTLP/HTTP by the time the app has closed', async t => {
  const received: Array<{ path: string, body: string }> = []
  const collector = createServer((req, res) => {
    let body = ''
    req.on('data', chunk => { body += chunk })
    req.on('end', () => {
      received.push({ path: req.url ?? '', body })
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  collector.listen(0, '127.0.0.1')
  await once(collector, 'listening')
  t.teardown(() => collector.close())
  const address = collector.address()
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
  process.env.OTEL_EXPORTER_OTLP_PROTOCOL = 'http/json'
  t.teardown(() => {
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT
    delete process.env.OTEL_EXPORTER_OTLP_PROTOCOL
  })

  const { app, url, logs } = await build(t, {}, { app: { tracing: { enabled: tracingEnabled(process.env) } } })
  t.equal(app.tracing.enabled, true)
  t.match(logs().find(l => l.event === 'tracing.enabled'), { exporter: 'otlp-http' })
  const res = await requestJson(`${url}/api/send`, 'POST', { from: 'svc', to: 'offline-bob', text: 'hello' })
  t.equal(res.status, 200)
  await app.close()

  const traces = received.filter(r => r.path === '/v1/traces')
  t.ok(traces.length > 0, 'the exporter posted to /v1/traces')
  const names = traces.flatMap(r => [...r.body.matchAll(/"name":"([^"]+)"/g)].map(m => m[1]))
  t.ok(names.includes('request'), 'the HTTP span')
  t.ok(names.includes('store.commit'), 'the store commit span')
  t.ok(traces.some(r => r.body.includes('"switchboard"')), 'service.name is switchboard')
})
