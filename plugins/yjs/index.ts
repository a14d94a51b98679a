import fp from 'fastify-plugin'
import { Counter, Gauge } from 'prom-client'
import { accessTo, binaryFrame, CLOSE_CODES, type CloseReason, type Session, type SessionProtocol } from './deps.js'
import { Documents, type DocumentRelay, type Peer } from './documents.js'
import { DocumentSession, UpdateBudget, permissionDenied } from './connection.js'
import { DOC_NAME } from './names.js'
import { HocuspocusConnection } from './hocuspocus.js'
import { errorBody } from './deps.js'

export { DOC_NAME } from './names.js'
export { DocumentError, Documents, CollabDocument } from './documents.js'
export { documentJson, ROOT_KINDS, type RootKind } from './json.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Collaborative Yjs documents: the ones in memory (stored in `app.store.documents`). */
    yjs: { documents: Documents }
  }
}

/** The namespace of documents in the broker and in presence. */
const YJS_NS = 'yjs'

/** Idle sockets get an empty awareness update this often, under the providers' 30 s watchdog. */
const KEEPALIVE_MS = 15000
const EMPTY_AWARENESS = Uint8Array.of(1, 1, 0)

/**
 * Yjs documents over y-websocket (`/yjs/<name>`) and Hocuspocus (`/collab`),
 * kept in the service's store. Every update is applied, then committed, then relayed.
 */
export default fp(async function yjs (app) {
  const cfg = app.config
  const store = app.store.documents
  // a document's messages cross instances in the broker's `yjs` namespace (base64); its providers'
  // awareness clients are its members in presence, so a crashed instance's leave everywhere
  const { broker, presence } = app
  const relay: DocumentRelay | undefined = broker.kind === 'local'
    ? undefined
    : {
        subscribe: async name => {
          await broker.subscribe(YJS_NS, name)
          await presence.occupy(YJS_NS, name).catch(() => false)
        },
        unsubscribe: name => {
          broker.unsubscribe(YJS_NS, name)
          presence.vacate(YJS_NS, name).catch(() => false)
        },
        publish: (name, message) => {
          broker.publish(YJS_NS, name, Buffer.from(message).toString('base64')).catch(err => {
            app.log.warn({ event: 'yjs.relay_failed', doc: name, reason: (err as Error).message }, 'a document message did not reach the other instances; their editors resync on reconnect')
          })
        },
        memberJoined: (name, client) => { presence.join(YJS_NS, name, String(client), undefined).catch(() => 'present') },
        memberLeft: (name, client) => { presence.leave(YJS_NS, name, String(client)).catch(() => false) }
      }
  const documents = new Documents({
    store,
    relay,
    log: app.log,
    maxUpdateBytes: cfg.YJS_MAX_UPDATE_BYTES,
    maxDocumentBytes: cfg.YJS_MAX_DOCUMENT_BYTES,
    unloadAfterMs: cfg.YJS_UNLOAD_AFTER_MS,
    compactAfterUpdates: cfg.YJS_COMPACT_AFTER_UPDATES,
    maxJsonDepth: cfg.JSON_MAX_DEPTH,
    // SQLite is one process's (its lock); with no other instance, nobody else appends to a document
    exclusiveStore: app.store.kind === 'sqlite' && relay === undefined
  })
  app.decorate('yjs', { documents })
  // awareness clients of a crashed instance: removed once, here, and told to the other instances
  presence.onGone(YJS_NS, (name, gone) => documents.gone(name, gone.map(g => g.key)))
  broker.handle(YJS_NS, (name, frame) => documents.remote(name, new Uint8Array(Buffer.from(frame, 'base64'))))

  const registers = [app.metrics.registry]
  const updates = new Counter({ name: 'switchboard_yjs_updates_total', help: 'Yjs updates received, by outcome (stored, unchanged, refused code)', labelNames: ['outcome'], registers })
  // counted once per update: the children, not a label lookup each time
  const storedUpdates = updates.labels({ outcome: 'stored' })
  const unchangedUpdates = updates.labels({ outcome: 'unchanged' })
  new Gauge({ name: 'switchboard_yjs_documents', help: 'Yjs documents in memory', registers, collect () { this.set(documents.size) } }) // eslint-disable-line no-new
  // kept beside the engine's switchboard_connections{protocol}: dashboards built on it go on working
  new Gauge({ // eslint-disable-line no-new
    name: 'switchboard_yjs_connections',
    help: 'Open Yjs connections, by protocol',
    labelNames: ['protocol'],
    registers,
    collect () {
      this.reset()
      for (const protocol of ['y-websocket', 'hocuspocus']) this.set({ protocol }, app.sessions.countsByProtocol().get(protocol) ?? 0)
    }
  })
  const sessionCount = () => (app.sessions.countsByProtocol().get('y-websocket') ?? 0) + (app.sessions.countsByProtocol().get('hocuspocus') ?? 0)
  app.statusReport.section('yjs', () => ({ documents: documents.size, sockets: sessionCount(), store: app.store.kind }))

  function refusedUpdate (protocol: string, doc: string, clientId: string | null, code: string, reason: string): void {
    updates.inc({ outcome: code })
    app.log.info({ event: 'yjs.update_refused', protocol, doc, clientId, code, reason }, 'Yjs update refused')
  }
  function eventsFor (protocol: string, doc: string, clientId: string | null, session: Session) {
    return {
      refused: (code: string, reason: string) => refusedUpdate(protocol, doc, clientId, code, reason),
      acked: (saved: boolean) => { (saved ? storedUpdates : unchangedUpdates).inc() },
      overRate: () => {
        refusedUpdate(protocol, doc, clientId, 'rate_limited', `over ${cfg.YJS_UPDATES_PER_SECOND} updates per second (YJS_UPDATES_PER_SECOND)`)
        session.close('flood', 'over the update rate: reconnect and resync')
      }
    }
  }

  // The Yjs protocols have no error frame for the engine's decisions: a close code says it, and the providers
  // reconnect and resync (nothing typed is lost). 1013 "try again later" for the rate and a full send buffer.
  const closeCode = (reason: CloseReason): number => {
    switch (reason) {
      case 'flood': return 1013
      case 'shutdown': return 1012 // Service Restart: providers reconnect
      default: return CLOSE_CODES[reason]
    }
  }
  const overRate = (session: Session) => session.close('flood', 'over the message rate (WS_MESSAGES_PER_SECOND): reconnect and resync')

  // y-websocket: one document per socket, named by the path; a fan-out sends one message to each peer
  // in turn, so its WebSocket frame is built once (the last message's frame is kept)
  let lastMessage: Uint8Array | null = null
  let lastFrame: Buffer | null = null
  const frameOf = (message: Uint8Array): Buffer => {
    if (message !== lastMessage || lastFrame === null) {
      lastFrame = binaryFrame(message)
      lastMessage = message
    }
    return lastFrame
  }
  interface YWebsocketState { name: string, peer: Peer, session: DocumentSession | null, early: Uint8Array[], left: boolean }
  const yws = new WeakMap<Session, YWebsocketState>()
  const yWebsocket: SessionProtocol = {
    name: 'y-websocket',
    closeCode,
    frame: (conn, data, isBinary) => {
      const state = yws.get(conn)
      if (!state) return
      if (!isBinary) {
        conn.sendBinary(permissionDenied('message: must be a binary frame (y-websocket messages are binary)'))
        return
      }
      const buffer = data as Buffer
      const message = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
      if (state.session) state.session.handle(message)
      else state.early.push(message)
    },
    rateLimited: overRate,
    closed: conn => {
      const state = yws.get(conn)
      if (!state) return
      state.left = true
      const s = state.session
      if (s) s.drained().then(() => documents.leave(s.doc, state.peer), () => documents.leave(s.doc, state.peer))
    },
    channels: conn => { const state = yws.get(conn); return state ? [state.name] : [] }
  }

  app.upgradeRoute<{ Params: { '*': string }, Querystring: { token?: string } }>({
    url: '/yjs/*',
    protocol: yWebsocket,
    token: 'upgrade',
    usage: '/yjs/<document> is a WebSocket endpoint for Yjs providers: connect with a WebSocket client (Connection: Upgrade, Upgrade: websocket)',
    schema: { querystring: { type: 'object', properties: { token: { type: 'string', maxLength: 4096 } } } },
    check: async (request, reply) => {
      const name = (request.params as { '*': string })['*']
      if (!DOC_NAME.test(name)) {
        return reply.code(400).send(errorBody(400, 'invalid_document', 'document: the name after /yjs/ must be 1 to 128 of A-Z a-z 0-9 _ . : @ / -'))
      }
      if (accessTo(request.principal, name) === null) {
        request.log.warn({ event: 'yjs.access_denied', doc: name, clientKey: request.clientKey }, 'the token does not give access to this document')
        return reply.code(403).send(errorBody(403, 'forbidden', `document: the token's rooms claim does not include ${name}`))
      }
    },
    accepted (session, request) {
      const name = request.params['*']
      const readOnly = accessTo(request.principal, name) === 'read'
      const clientId = request.principal?.sub ?? null
      const log = app.log
      // echo: the y-websocket 4 provider confirms a local edit when it comes back (the reference server's broadcast)
      const peer: Peer = { send: m => { session.sendFrame(frameOf(m)) }, readOnly, echo: true }
      const state: YWebsocketState = { name, peer, session: null, early: [], left: false }
      yws.set(session, state)
      session.socket.once('close', code => {
        log.info({ event: 'yjs.connection.close', protocol: 'y-websocket', doc: name, clientId, code }, 'Yjs connection closed')
      })
      documents.open(name, peer).then(doc => {
        if (state.left) {
          documents.leave(doc, peer)
          return
        }
        state.session = new DocumentSession(doc, peer, new UpdateBudget(cfg.YJS_UPDATES_PER_SECOND), {
          ...eventsFor('y-websocket', name, clientId, session),
          refused (code, reason) {
            refusedUpdate('y-websocket', name, clientId, code, reason)
            peer.send(permissionDenied(reason))
          }
        }, log)
        log.info({ event: 'yjs.connection.open', protocol: 'y-websocket', doc: name, clientId, readOnly }, 'Yjs connection opened')
        state.session.greet()
        for (const m of state.early.splice(0)) state.session.handle(m)
      }, err => {
        log.error({ event: 'yjs.load_failed', doc: name, err }, 'could not load a document')
        session.close('internal', 'the document could not be loaded')
      })
    }
  })

  // Hocuspocus: one socket, many documents, each with its own Auth message (the token is checked there)
  const hocus = new WeakMap<Session, HocuspocusConnection>()
  const hocuspocus: SessionProtocol = {
    name: 'hocuspocus',
    authenticatesInBand: true,
    closeCode,
    frame: (conn, data, isBinary) => {
      const buffer = data as Buffer
      hocus.get(conn)?.handle(new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength), isBinary)
    },
    rateLimited: overRate,
    closed: conn => hocus.get(conn)?.closed(),
    channels: conn => hocus.get(conn)?.documents() ?? []
  }
  app.upgradeRoute({
    url: '/collab',
    protocol: hocuspocus,
    token: 'in-band',
    usage: '/collab is a WebSocket endpoint for Yjs providers: connect with a WebSocket client (Connection: Upgrade, Upgrade: websocket)',
    accepted (session) {
      const auth = app.auth
      const conn = new HocuspocusConnection(session, {
        documents,
        log: app.log,
        // the operator's static tokens (ADMIN_READONLY_TOKEN: read-only) in any mode, JWTs in auth mode
        verify: async token => auth.staticPrincipal(token) ?? (auth.enabled ? await auth.verify(token) : null),
        maxDocuments: cfg.YJS_MAX_DOCUMENTS_PER_CONNECTION,
        updatesPerSecond: cfg.YJS_UPDATES_PER_SECOND,
        maxQueuedBytes: cfg.WS_MAX_PAYLOAD,
        authenticated: principal => app.sessions.authenticated(session, principal),
        events: (doc, clientId) => eventsFor('hocuspocus', doc, clientId, session)
      })
      hocus.set(session, conn)
      session.socket.once('close', code => {
        app.log.info({ event: 'yjs.connection.close', protocol: 'hocuspocus', code }, 'Yjs connection closed')
      })
    }
  })

  // Idle providers get an empty awareness update under their 30 s watchdog (Hocuspocus: one per open document)
  const keepalive = setInterval(() => {
    const idleSince = Date.now() - KEEPALIVE_MS + 1000
    for (const session of app.sessions.all()) {
      if (session.lastSentAt > idleSince || !session.open) continue
      if (session.protocol === yWebsocket) session.sendBinary(EMPTY_AWARENESS)
      else if (session.protocol === hocuspocus) hocus.get(session)?.keepalive()
    }
  }, KEEPALIVE_MS)
  keepalive.unref()

  // The engine closes the sessions at shutdown (1012, providers reconnect); then documents flush
  // (this hook runs before the store's, which closes the store after them)
  app.addHook('onClose', async () => {
    clearInterval(keepalive)
    await documents.close()
  })
}, { name: 'yjs', fastify: '5.x', dependencies: ['config', 'auth', 'sessions', 'upgrade-routes', 'metrics', 'status', 'store', 'cluster'] })
