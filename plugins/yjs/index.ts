import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import { Counter, Gauge } from 'prom-client'
import { closeCodeLabel, KEY_PREFIX, rateLimit, tokenRequired } from './deps.js'
import { docsRoutes } from './http.js'
import { RedisDocumentStore, SqliteDocumentStore, type DocumentStore, type RedisCommands } from './store.js'
import { Documents, type DocumentRelay, type Peer } from './documents.js'
import { DocumentSession, UpdateBudget, permissionDenied } from './connection.js'
import { DOC_NAME, documentAccess } from './access.js'
import { HocuspocusConnection } from './hocuspocus.js'

export interface YjsOptions {
  /** The store to use [SQLite in DATA_DIR/docs.sqlite]. */
  store?: DocumentStore
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Collaborative Yjs documents: the ones in memory and their store. */
    yjs: { documents: Documents, store: DocumentStore }
  }
}

const UPGRADE_REQUIRED = (path: string) => ({
  statusCode: 426,
  error: 'Upgrade Required',
  code: 'upgrade_required',
  message: `${path} is a WebSocket endpoint for Yjs providers: connect with a WebSocket client (Connection: Upgrade, Upgrade: websocket)`
})

/** Idle sockets get an empty awareness update this often, under the providers' 30 s watchdog. */
const KEEPALIVE_MS = 15000
const EMPTY_AWARENESS = Uint8Array.of(1, 1, 0)

/**
 * Yjs documents over y-websocket (`/yjs/<name>`) and Hocuspocus (`/collab`),
 * one store for both. Every update is committed before it is relayed.
 */
export default fp<YjsOptions>(async function yjs (app, opts) {
  const cfg = app.config
  const link = app.redisLink
  const store = opts.store ?? (link ? new RedisDocumentStore(link.commands as unknown as RedisCommands, KEY_PREFIX) : new SqliteDocumentStore(cfg.DATA_DIR))
  // a document's messages cross instances as room frames of a room name no client can use (NUL-prefixed), base64
  const fanout = app.fanout
  const ROOM = '\u0000yjs\u0000'
  const relay: DocumentRelay | undefined = fanout.kind === 'local'
    ? undefined
    : {
        subscribe: name => fanout.subscribeRoom(ROOM + name),
        unsubscribe: name => fanout.unsubscribeRoom(ROOM + name),
        publish: (name, message) => fanout.publishToRoom(ROOM + name, Buffer.from(message).toString('base64')),
        memberJoined: (name, client) => fanout.memberJoined(ROOM + name, String(client)),
        memberLeft: (name, client) => fanout.memberLeft(ROOM + name, String(client))
      }
  const documents = new Documents({
    store,
    relay,
    log: app.log,
    maxUpdateBytes: cfg.YJS_MAX_UPDATE_BYTES,
    maxDocumentBytes: cfg.YJS_MAX_DOCUMENT_BYTES,
    unloadAfterMs: cfg.YJS_UNLOAD_AFTER_MS,
    compactAfterUpdates: cfg.YJS_COMPACT_AFTER_UPDATES
  })
  app.decorate('yjs', { documents, store })
  fanout.onMembersGone((room, clients) => {
    if (room.startsWith(ROOM)) documents.gone(room.slice(ROOM.length), clients)
  })
  if (relay) {
    // the fanout sweeps rooms with members here; a document with only remote awareness is swept here,
    // so the clients of a dead instance go within its TTL on every instance that has the document
    const sweep = setInterval(() => {
      for (const name of documents.names()) fanout.members(ROOM + name).catch(() => {})
    }, Math.max(100, Math.floor(cfg.REDIS_INSTANCE_TTL_MS / 3)))
    sweep.unref()
    app.addHook('onClose', async () => clearInterval(sweep))
  }
  fanout.onRoomFrame((room, frame) => {
    if (room.startsWith(ROOM)) documents.remote(room.slice(ROOM.length), new Uint8Array(Buffer.from(frame, 'base64')))
  })

  const registers = [app.metrics.registry]
  const updates = new Counter({ name: 'switchboard_yjs_updates_total', help: 'Yjs updates received, by outcome (stored, unchanged, refused code)', labelNames: ['outcome'], registers })
  const connectionsOpen = new Gauge({ name: 'switchboard_yjs_connections', help: 'Open Yjs connections, by protocol', labelNames: ['protocol'], registers })
  new Gauge({ name: 'switchboard_yjs_documents', help: 'Yjs documents in memory', registers, collect () { this.set(documents.size) } }) // eslint-disable-line no-new
  const closes = new Counter({ name: 'switchboard_yjs_connection_closes_total', help: 'Closed Yjs connections by close code', labelNames: ['code'], registers })
  app.statusReport.section('yjs', () => ({ documents: documents.size, sockets: sockets.size, store: store.kind }))

  const sockets = new Set<WebSocket>()
  const keepalives = new WeakMap<WebSocket, () => void>()
  function track (socket: WebSocket, protocol: string): void {
    sockets.add(socket)
    connectionsOpen.inc({ protocol })
    let lastSent = Date.now()
    const send = socket.send.bind(socket)
    socket.send = ((data: any, ...rest: any[]) => { lastSent = Date.now(); return (send as any)(data, ...rest) }) as typeof socket.send
    const keepalive = setInterval(() => {
      if (Date.now() - lastSent < KEEPALIVE_MS - 1000 || socket.readyState !== 1) return
      const custom = keepalives.get(socket)
      if (custom) custom()
      else socket.send(EMPTY_AWARENESS)
    }, KEEPALIVE_MS)
    keepalive.unref()
    socket.once('close', code => {
      clearInterval(keepalive)
      sockets.delete(socket)
      connectionsOpen.dec({ protocol })
      closes.inc({ code: closeCodeLabel(code) })
    })
  }

  function refusedUpdate (protocol: string, doc: string, clientId: string | null, code: string, reason: string): void {
    updates.inc({ outcome: code })
    app.log.info({ event: 'yjs.update_refused', protocol, doc, clientId, code, reason }, 'Yjs update refused')
  }
  function eventsFor (protocol: string, doc: string, clientId: string | null, socket: WebSocket) {
    return {
      refused: (code: string, reason: string) => refusedUpdate(protocol, doc, clientId, code, reason),
      acked: (saved: boolean) => { updates.inc({ outcome: saved ? 'stored' : 'unchanged' }) },
      overRate: () => {
        refusedUpdate(protocol, doc, clientId, 'rate_limited', `over ${cfg.YJS_UPDATES_PER_SECOND} updates per second (YJS_UPDATES_PER_SECOND)`)
        // 1013 "try again later": the provider reconnects and resyncs, so nothing it typed is lost
        socket.close(1013, 'over the update rate: reconnect and resync')
      }
    }
  }

  const refuseHttp = (path: string) => async (request: FastifyRequest, reply: FastifyReply) => {
    if (!request.ws) return reply.code(426).header('upgrade', 'websocket').send(UPGRADE_REQUIRED(path))
  }

  // y-websocket: the document name is the rest of the path; the token is `?token=` (checked by tokenRequired)
  await app.register(async function yWebsocketRoutes (scope: FastifyInstance) {
    await scope.register(tokenRequired)
    scope.get<{ Params: { '*': string }, Querystring: { token?: string } }>('/yjs/*', {
      websocket: true,
      config: { tokenInQuery: true },
      schema: { querystring: { type: 'object', properties: { token: { type: 'string', maxLength: 4096 } } } },
      onRequest: refuseHttp('/yjs/<document>'),
      preValidation: [app.checkUpgradeOrigin],
      preHandler: [async (request, reply) => {
        const name = request.params['*']
        if (!DOC_NAME.test(name)) {
          return reply.code(400).send({ statusCode: 400, error: 'Bad Request', code: 'invalid_document', message: 'document: the name after /yjs/ must be 1 to 128 of A-Z a-z 0-9 _ . : @ / -' })
        }
        if (documentAccess(request.principal, name) === null) {
          request.log.warn({ event: 'yjs.access_denied', doc: name, clientKey: request.clientKey }, 'the token does not give access to this document')
          return reply.code(403).send({ statusCode: 403, error: 'Forbidden', code: 'forbidden', message: `document: the token's rooms claim does not include ${name}` })
        }
      }, app.acquireConnectionSlot]
    }, (socket, request) => {
      const name = request.params['*']
      const readOnly = documentAccess(request.principal, name) === 'read'
      const clientId = request.principal?.sub ?? null
      const log = app.log
      track(socket, 'y-websocket')
      socket.binaryType = 'nodebuffer'
      const peer: Peer = { send: m => { if (socket.readyState === 1) socket.send(m) }, readOnly }
      const early: Uint8Array[] = []
      let session: DocumentSession | null = null
      let open = true
      socket.on('message', (data: Buffer) => {
        const message = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        if (session) session.handle(message)
        else early.push(message)
      })
      socket.on('error', () => socket.terminate())
      socket.once('close', (code) => {
        open = false
        if (session) {
          const s = session
          s.drained().then(() => documents.leave(s.doc, peer), () => documents.leave(s.doc, peer))
        }
        log.info({ event: 'yjs.connection.close', protocol: 'y-websocket', doc: name, clientId, code }, 'Yjs connection closed')
      })
      documents.open(name, peer).then(doc => {
        if (!open) {
          documents.leave(doc, peer)
          return
        }
        session = new DocumentSession(doc, peer, new UpdateBudget(cfg.YJS_UPDATES_PER_SECOND), {
          ...eventsFor('y-websocket', name, clientId, socket),
          refused (code, reason) {
            refusedUpdate('y-websocket', name, clientId, code, reason)
            peer.send(permissionDenied(reason))
          }
        }, log)
        log.info({ event: 'yjs.connection.open', protocol: 'y-websocket', doc: name, clientId, readOnly }, 'Yjs connection opened')
        session.greet()
        for (const m of early.splice(0)) session.handle(m)
      }, err => {
        log.error({ event: 'yjs.load_failed', doc: name, err }, 'could not load a document')
        socket.close(1011, 'the document could not be loaded')
      })
    })
  })

  // Hocuspocus: one socket, many documents, each with its own Auth message (the token is checked there)
  await app.register(async function hocuspocusRoutes (scope: FastifyInstance) {
    scope.get('/collab', {
      websocket: true,
      onRequest: refuseHttp('/collab'),
      preValidation: [app.checkUpgradeOrigin],
      preHandler: [app.acquireConnectionSlot]
    }, (socket) => {
      track(socket, 'hocuspocus')
      socket.binaryType = 'nodebuffer'
      const auth = app.auth
      const conn = new HocuspocusConnection(socket, {
        documents,
        log: app.log,
        verify: auth.enabled ? token => auth.verify(token) : null,
        maxDocuments: cfg.YJS_MAX_DOCUMENTS_PER_CONNECTION,
        updatesPerSecond: cfg.YJS_UPDATES_PER_SECOND,
        events: (doc, clientId) => eventsFor('hocuspocus', doc, clientId, socket)
      })
      keepalives.set(socket, () => conn.keepalive())
      socket.on('message', (data: Buffer) => conn.handle(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)))
      socket.on('error', () => socket.terminate())
      socket.once('close', code => {
        conn.closed()
        app.log.info({ event: 'yjs.connection.close', protocol: 'hocuspocus', code }, 'Yjs connection closed')
      })
    })
  })

  // HTTP for backends, under the API's prefixes, with a token in auth mode and the API's rate limit
  await app.register(async function docsHttp (scope: FastifyInstance) {
    await scope.register(tokenRequired)
    await scope.register(rateLimit, { max: cfg.RATE_LIMIT_MAX, windowMs: cfg.RATE_LIMIT_WINDOW_MS, redis: app.redisLink?.commands })
    for (const prefix of ['/api', '/api/v1']) await scope.register(docsRoutes, { prefix, documents, maxUpdateBytes: cfg.YJS_MAX_UPDATE_BYTES, ...(prefix === '/api' ? { aliasOf: '/api/v1' } : {}) })
  })

  // Providers are told to reconnect (1012 Service Restart), then documents are flushed, then the store closes.
  app.addHook('preClose', async () => {
    const gone = [...sockets].map(s => new Promise<void>(resolve => {
      if (s.readyState === 3) return resolve()
      s.once('close', () => resolve())
      s.close(1012, 'server restarting: reconnect')
    }))
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.all(gone), new Promise(resolve => { timer = setTimeout(resolve, 2000) })])
    clearTimeout(timer)
    for (const s of sockets) s.terminate()
  })
  app.addHook('onClose', async () => {
    await documents.close()
    await store.close()
  })
}, { name: 'yjs', fastify: '5.x', dependencies: ['config', 'auth', 'cors', 'limits', 'metrics', 'status', 'websocket', 'redis', 'fanout'] })
