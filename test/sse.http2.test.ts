import t from 'tap'
import http2 from 'node:http2'
import https from 'node:https'
import net from 'node:net'
import tls from 'node:tls'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import WebSocket from 'ws'
import { tempDir, waitFor } from './support/helper.js'
import { startServer } from './support/process.js'
import { EventLog, parseNdjson, parseSse, type ReceivedEvent } from './support/stream-clients.js'

/** A self-signed certificate for 127.0.0.1 made by openssl (node:crypto cannot make certificates), or null without openssl. */
function selfSigned (dir: string): { cert: string, key: string } | null {
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'])
  if (made.error !== undefined || made.status !== 0) return null
  return { cert, key }
}

/** One HTTP/2 stream reading GET /sse: its status, headers and events. */
class Http2Sse {
  readonly log = new EventLog()
  status = 0
  headers: http2.IncomingHttpHeaders = {}
  readonly response: Promise<void>
  readonly ended: Promise<void>
  private readonly stream: http2.ClientHttp2Stream
  body = ''
  /** Keepalive comment lines received. */
  keepalives = 0

  constructor (session: http2.ClientHttp2Session, path: string, headers: Record<string, string> = {}) {
    this.stream = session.request({ ':path': path, ...headers })
    this.stream.setEncoding('utf8')
    this.response = new Promise(resolve => this.stream.once('response', h => {
      this.headers = h
      this.status = Number(h[':status'])
      resolve()
    }))
    this.ended = new Promise(resolve => this.stream.once('close', resolve))
    let buffer = ''
    this.stream.on('data', (chunk: string) => {
      if (this.status !== 200) {
        this.body += chunk
        return
      }
      if (String(this.headers['content-type']).startsWith('application/x-ndjson')) {
        const parsed = parseNdjson(buffer + chunk)
        buffer = parsed.rest
        for (const e of parsed.events) this.log.push(e)
        return
      }
      const parsed = parseSse(buffer + chunk)
      buffer = parsed.rest
      this.keepalives += parsed.keepalives
      for (const e of parsed.events) this.log.push(e)
    })
    this.stream.on('error', () => {})
  }

  /** Cancels the stream (RST_STREAM); the session stays. */
  close (): void {
    this.stream.close(http2.constants.NGHTTP2_CANCEL)
  }
}

t.test('with TLS_CERT and TLS_KEY: /sse over HTTP/2 (events, resume), HTTP/1.1 and /ws on the same port, a slot per HTTP/2 stream', { timeout: 120000 }, async t => {
  const dir = tempDir(t)
  const files = selfSigned(dir)
  if (files === null) {
    console.log('!!! HTTP/2 test SKIPPED: openssl is not on PATH (it makes the test\'s self-signed certificate)')
    t.pass('skipped: openssl is not installed')
    return
  }
  const ca = readFileSync(files.cert)
  // a pending-connection timeout well under the heartbeat: a session wrongly held as a slow-header connection would be cut before the first keepalive
  const server = await startServer(t, { TLS_CERT: files.cert, TLS_KEY: files.key, DATA_DIR: join(dir, 'data'), RATE_LIMIT_MAX: '100000', MAX_CONNECTIONS_PER_CLIENT: '2', PENDING_HEADERS_TIMEOUT_MS: '300', HEARTBEAT_INTERVAL_MS: '1000' })
  const origin = `https://127.0.0.1:${server.port}`

  /** An HTTP/1.1 request over TLS (https.request never negotiates h2). */
  const h1 = (method: string, path: string, body?: unknown) => new Promise<{ status: number, version: string, body: any }>((resolve, reject) => {
    const req = https.request(`${origin}${path}`, { method, ca, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, version: res.httpVersion, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end(body === undefined ? undefined : JSON.stringify(body))
  })
  const publish = async (n: number) => {
    const res = await h1('POST', '/api/rooms/feed/publish', { data: n })
    t.equal(res.status, 200, `published ${n}`)
  }

  const session = http2.connect(origin, { ca })
  t.teardown(() => { session.close() })
  session.on('error', () => {})
  // a page served by this server sends its own https origin
  const first = new Http2Sse(session, '/sse?clientId=h2-reader&rooms=feed', { origin })
  await first.response
  t.equal(first.status, 200, 'GET /sse over HTTP/2: 200')
  t.match(first.headers['content-type'], /^text\/event-stream/)
  t.equal(first.headers.connection, undefined, 'no connection header (HTTP/2 forbids it)')
  t.equal(session.alpnProtocol, 'h2', 'negotiated h2')
  await first.log.next('joined')
  for (let n = 1; n <= 5; n++) await publish(n)
  const fifth = await first.log.next('room_message', e => e.data.data === 5)
  first.close()
  await first.ended
  for (let n = 6; n <= 8; n++) await publish(n)
  await waitFor(async () => (await h1('GET', '/api/status')).body.connections.total === 0, 'the cancelled stream to give its slot back', 15000, 20)

  const resumed = new Http2Sse(session, '/sse?clientId=h2-reader&rooms=feed', { 'last-event-id': fifth.id })
  await resumed.response
  t.equal(resumed.status, 200, 'a second stream on the same session')
  const foreign = new Http2Sse(session, '/sse?rooms=feed', { origin: `http://127.0.0.1:${server.port}` })
  await foreign.response
  await foreign.ended
  t.equal(foreign.status, 403, 'the http:// spelling of the server\'s origin is not its own over TLS: 403')
  const joined = await resumed.log.next('joined')
  t.equal(joined.data.recovered, true, 'resumed from Last-Event-ID')
  await publish(9)
  await resumed.log.next('room_message', e => e.data.data === 9)
  await waitFor(() => resumed.keepalives > 0, 'a keepalive comment on the HTTP/2 stream', 15000, 20)
  t.pass('the idle HTTP/2 stream gets keepalive comments (its session outlives PENDING_HEADERS_TIMEOUT_MS)')
  const got = [...first.log.roomMessages('feed'), ...resumed.log.roomMessages('feed')].map(m => m.data)
  t.same(got, [1, 2, 3, 4, 5, 6, 7, 8, 9], '0 gaps, 0 duplicates across the resume over HTTP/2')

  // MAX_CONNECTIONS_PER_CLIENT 2: the resumed stream and one more hold both slots of 127.0.0.1
  const second = new Http2Sse(session, '/sse?rooms=other')
  await second.log.next('welcome')
  const third = new Http2Sse(session, '/sse?rooms=other')
  await third.response
  await third.ended
  t.equal(third.status, 429, 'a third stream of the client key is refused 429 on the same session')
  t.match(JSON.parse(third.body), { code: 'connection_limit_exceeded', scope: 'client', limit: 2 })
  second.close()
  await second.ended
  const status = async () => (await h1('GET', '/api/status')).body.connections.total as number
  await waitFor(async () => await status() === 1, 'the cancelled stream to give its slot back while its session stays open', 15000, 20)
  t.equal(session.closed, false, 'the session is still open')
  const fourth = new Http2Sse(session, '/sse?rooms=other')
  await fourth.log.next('welcome')
  t.pass('the slot of a cancelled HTTP/2 stream is taken again on the same session')
  fourth.close()
  resumed.close()
  await resumed.ended

  const ndjson = new Http2Sse(session, '/stream?rooms=feed')
  await ndjson.response
  t.equal(ndjson.status, 200, 'GET /stream over HTTP/2: 200')
  t.match(ndjson.headers['content-type'], /^application\/x-ndjson/)
  await ndjson.log.next('joined')
  await publish(11)
  t.match((await ndjson.log.next('room_message')).data, { room: 'feed', data: 11 }, 'its NDJSON events')
  ndjson.close()

  // HTTP/1.1 on the same port: the API, a stream, and /ws (WebSocket upgrades are HTTP/1.1)
  const api = await h1('GET', '/health')
  t.equal(api.version, '1.1', 'an HTTP/1.1 client is answered in HTTP/1.1')
  t.equal(api.status, 200)
  const h1Events = new EventLog()
  const h1Stream = await new Promise<{ version: string, headers: Record<string, unknown>, destroy: () => void }>((resolve, reject) => {
    const req = https.get(`${origin}/sse?rooms=feed`, { ca }, res => {
      let buffer = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        const parsed = parseSse(buffer + chunk)
        buffer = parsed.rest
        for (const e of parsed.events) h1Events.push(e as ReceivedEvent)
      })
      resolve({ version: res.httpVersion, headers: res.headers, destroy: () => req.destroy() })
    })
    req.on('error', reject)
  })
  t.teardown(() => h1Stream.destroy())
  t.equal(h1Stream.version, '1.1')
  t.equal(h1Stream.headers.connection, 'close', 'an HTTP/1.1 stream says connection: close')
  await h1Events.next('joined')
  await publish(12)
  t.match((await h1Events.next('room_message')).data, { room: 'feed', data: 12 })

  const ws = new WebSocket(`wss://127.0.0.1:${server.port}/ws`, { ca })
  t.teardown(() => ws.terminate())
  const welcome = await new Promise<any>((resolve, reject) => {
    ws.once('message', data => resolve(JSON.parse(String(data))))
    ws.once('error', reject)
  })
  t.equal(welcome.type, 'welcome', '/ws upgrades over TLS (HTTP/1.1)')

  ws.terminate()
  await waitFor(async () => await status() === 1, 'the WebSocket to give its slot back', 15000, 20)

  // graceful shutdown with a stream on the HTTP/2 session and one over HTTP/1.1;
  // a WebSocket that never answers the close holds the shutdown open (up to its close timeout) while new requests arrive
  // from another address: its own client key, so MAX_CONNECTIONS_PER_CLIENT of this test's reader is not touched
  const stubborn = tls.connect({ socket: net.connect({ host: '127.0.0.1', localAddress: '127.0.0.2', port: server.port }), ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
  t.teardown(() => { stubborn.destroy() })
  stubborn.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    stubborn.once('secureConnect', () => stubborn.write('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'))
    stubborn.once('data', chunk => String(chunk).startsWith('HTTP/1.1 101') ? resolve() : reject(new Error(String(chunk))))
  })
  const last = new Http2Sse(session, '/sse?rooms=feed')
  const lastJoined = await last.log.next('joined')
  server.proc.kill('SIGTERM')
  t.match((await last.log.next('server_shutdown')).data, { type: 'server_shutdown' }, 'an HTTP/2 stream is told server_shutdown')
  await last.ended
  // a stream opened now, on the same HTTP/2 session: 200 with the notice and the position it sent (no Connection header in HTTP/2)
  const during = new Http2Sse(session, '/sse?rooms=feed', { 'last-event-id': lastJoined.id })
  await during.response
  t.equal(during.status, 200, 'a stream opened during the shutdown gets 200 over HTTP/2')
  const notice = await during.log.next('server_shutdown')
  t.equal(notice.id, lastJoined.id, 'with the position it sent')
  await during.ended
  const refused = await new Promise<number>((resolve, reject) => {
    const req = session.request({ ':path': '/api/rooms' })
    req.once('response', h => { resolve(Number(h[':status'])); req.close() })
    req.once('error', reject)
  })
  t.equal(refused, 503, 'other requests over HTTP/2 get 503 shutting_down')
  stubborn.destroy()
  t.match((await h1Events.next('server_shutdown')).data, { type: 'server_shutdown' }, 'an HTTP/1.1 stream too')
  t.same(await server.exited, { code: 0, signal: null }, 'the process exits 0 (the HTTP/2 session does not hold it)')
  t.notOk(server.logs().some(l => l.event === 'shutdown.forced'), 'within SHUTDOWN_GRACE_MS')
})

t.test('TLS_CERT without TLS_KEY, or an unreadable file, stops the server with one line naming the variable', async t => {
  const { runUntilExit } = await import('./support/process.js')
  const dir = tempDir(t)
  const alone = await runUntilExit(t, { TLS_CERT: join(dir, 'cert.pem'), DATA_DIR: join(dir, 'data') })
  t.not(alone.code, 0)
  t.match(alone.stderr + alone.output, /TLS_CERT and TLS_KEY/)
  const missing = await runUntilExit(t, { TLS_CERT: join(dir, 'missing-cert.pem'), TLS_KEY: join(dir, 'missing-key.pem'), DATA_DIR: join(dir, 'data') })
  t.not(missing.code, 0)
  t.match(missing.stderr + missing.output, /TLS_CERT must be a readable PEM file \(ENOENT/)
})
