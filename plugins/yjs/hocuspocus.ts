import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import type { FastifyBaseLogger } from 'fastify'
import { accessTo, binaryFrame, type Session, type Principal } from './deps.js'
import { DOC_NAME } from './names.js'
import type { Documents, Peer } from './documents.js'
import { DocumentSession, UpdateBudget, type DocumentSessionEvents } from './connection.js'

/** Hocuspocus message types (after the document name), as @hocuspocus/provider numbers them. */
export const HocuspocusType = { sync: 0, awareness: 1, auth: 2, queryAwareness: 3, stateless: 5, broadcastStateless: 6, close: 7, syncStatus: 8, pong: 10 } as const
const AuthSub = { token: 0, permissionDenied: 1, authenticated: 2 } as const

/** Messages a document may queue before its Auth message is handled, and their bytes in all. */
const MAX_QUEUED = 64

export interface HocuspocusOptions {
  documents: Documents
  log: FastifyBaseLogger
  /** The principal of a token: rejects when it is refused; null for an anonymous client (open mode). */
  verify: (token: string) => Promise<Principal | null>
  maxDocuments: number
  updatesPerSecond: number
  /** Bytes the messages queued before a document's Auth may take in all (WS_MAX_PAYLOAD). */
  maxQueuedBytes: number
  /** A document's token was accepted: the engine closes the session when the earliest of them expires. */
  authenticated (principal: Principal | null): void
  /** Refused updates, acks and over-rate, per document (metrics and logs). */
  events: (doc: string, clientId: string | null, send: (message: Uint8Array) => void) => Omit<DocumentSessionEvents, 'acked'> & { acked (saved: boolean): void }
}

interface Attached {
  name: string
  /** Messages received before the token was checked (copies: a view would keep the whole frame alive). */
  queue: Uint8Array[] | null
  queuedBytes: number
  session: DocumentSession | null
  peer: Peer | null
  closed: boolean
  /** Its Auth message is being verified (an asymmetric token waits for its key). */
  verifying: boolean
}

function framed (routingKey: string, write: (enc: encoding.Encoder) => void): Uint8Array {
  const enc = encoding.createEncoder()
  encoding.writeVarString(enc, routingKey)
  write(enc)
  return encoding.toUint8Array(enc)
}

/**
 * The WebSocket frame of a document's message (its name, then the message),
 * built once for every peer of a fan-out: the peers of a document send the
 * same message one after the other, under the same name.
 */
let lastMessage: Uint8Array | null = null
let lastKey = ''
let lastFrame: Buffer | null = null
function documentFrame (key: string, message: Uint8Array): Buffer {
  if (message !== lastMessage || key !== lastKey || lastFrame === null) {
    lastFrame = binaryFrame(framed(key, enc => encoding.writeUint8Array(enc, message)))
    lastMessage = message
    lastKey = key
  }
  return lastFrame
}

/**
 * One Hocuspocus socket: many documents, each named on every message, each
 * authenticated by its own Auth message. SyncStatus(1) is sent for a step 2
 * or an update only once it is committed.
 */
export class HocuspocusConnection {
  private readonly attached = new Map<string, Attached>()
  private readonly budget: UpdateBudget

  constructor (private readonly session: Session, private readonly opts: HocuspocusOptions) {
    this.budget = new UpdateBudget(opts.updatesPerSecond)
  }

  private send (message: Uint8Array): void {
    this.session.sendBinary(message)
  }

  /** The documents this connection has attached, by name (the admin listing). */
  documents (): string[] {
    return [...new Set([...this.attached.values()].map(a => a.name))]
  }

  /** An empty awareness update per open document: keeps every provider's watchdog quiet. */
  keepalive (): void {
    for (const key of this.attached.keys()) this.send(framed(key, enc => { encoding.writeVarUint(enc, HocuspocusType.awareness); encoding.writeVarUint8Array(enc, Uint8Array.of(0)) }))
  }

  /** One frame; `isBinary` false: a text frame, which the protocol has none of. */
  handle (data: Uint8Array, isBinary = true): void {
    if (!isBinary) return this.refuse('', 'message: must be a binary frame')
    if (data.length === 1 && data[0] === HocuspocusType.pong) return
    const decoder = decoding.createDecoder(data)
    let key: string
    let type: number
    try {
      key = decoding.readVarString(decoder)
    } catch {
      return this.refuse('', 'message: must start with a document name and a message type')
    }
    try {
      type = decoding.peekVarUint(decoder)
    } catch {
      return this.refuse(key, 'message: must have a message type (varint) after the document name')
    }
    const body = data.subarray(decoder.pos)
    // 4.x `sessionAwareness`: "name\0session" routes to the document `name`
    const zero = key.indexOf('\0')
    const name = zero < 0 ? key : key.slice(0, zero)
    let entry = this.attached.get(key)
    if (type === HocuspocusType.auth) {
      decoding.readVarUint(decoder)
      let sub: number
      let token: string
      try {
        sub = decoding.readVarUint(decoder)
        token = sub === AuthSub.token ? decoding.readVarString(decoder) : ''
      } catch {
        return this.deny(key, 'auth: truncated message')
      }
      if (sub !== AuthSub.token) return
      // authenticated, or being authenticated: a second Auth (a token refresh) changes nothing here
      if (entry?.peer || entry?.verifying === true) return
      if (!entry) {
        if (this.attached.size >= this.opts.maxDocuments) return this.deny(key, `documents: at most ${this.opts.maxDocuments} per connection (YJS_MAX_DOCUMENTS_PER_CONNECTION)`)
        entry = { name, queue: [], queuedBytes: 0, session: null, peer: null, closed: false, verifying: false }
        this.attached.set(key, entry)
      }
      this.authenticate(key, entry, token)
      return
    }
    if (!entry) {
      if (type === HocuspocusType.close) return
      if (this.attached.size >= this.opts.maxDocuments) return this.deny(key, `documents: at most ${this.opts.maxDocuments} per connection (YJS_MAX_DOCUMENTS_PER_CONNECTION)`)
      entry = { name, queue: [], queuedBytes: 0, session: null, peer: null, closed: false, verifying: false }
      this.attached.set(key, entry)
    }
    if (type === HocuspocusType.close) {
      this.detach(key, entry)
      this.send(framed(key, enc => { encoding.writeVarUint(enc, HocuspocusType.close); encoding.writeVarString(enc, 'provider_initiated') }))
      return
    }
    if (entry.session) {
      if (type === HocuspocusType.stateless) return // no server hook: accepted and dropped
      if (type === HocuspocusType.broadcastStateless) return this.broadcastStateless(key, entry, body)
      entry.session.handle(body)
      return
    }
    if (entry.queue) {
      if (entry.queue.length >= MAX_QUEUED || entry.queuedBytes + body.length > this.opts.maxQueuedBytes) {
        return this.deny(key, `queue: at most ${MAX_QUEUED} messages and ${this.opts.maxQueuedBytes} bytes before the Auth message`)
      }
      entry.queue.push(body.slice())
      entry.queuedBytes += body.length
    }
  }

  /** A stateless message to every peer of the document; a read-only peer may not broadcast. */
  private broadcastStateless (key: string, entry: Attached, body: Uint8Array): void {
    if (entry.peer?.readOnly === true) return this.refuse(key, 'broadcastStateless: this token gives read-only access to the document')
    const decoder = decoding.createDecoder(body)
    decoding.readVarUint(decoder)
    let payload: string
    try {
      payload = decoding.readVarString(decoder)
    } catch {
      return this.refuse(key, 'broadcastStateless: the payload must be a string')
    }
    for (const peer of entry.session!.doc.peers) peer.stateless?.(payload)
  }

  /**
   * Refuses one message of a document in the protocol's words (an Auth
   * permission-denied naming why), without closing the document: what the
   * provider sends next is handled as usual.
   */
  private refuse (key: string, reason: string): void {
    this.opts.log.info({ event: 'yjs.update_refused', protocol: 'hocuspocus', doc: key.split('\0')[0], code: 'invalid_message', reason }, 'Yjs message refused')
    this.send(framed(key, enc => {
      encoding.writeVarUint(enc, HocuspocusType.auth)
      encoding.writeVarUint(enc, AuthSub.permissionDenied)
      encoding.writeVarString(enc, reason)
    }))
  }

  private deny (key: string, reason: string): void {
    const entry = this.attached.get(key)
    if (entry) this.detach(key, entry)
    this.opts.log.info({ event: 'yjs.access_denied', protocol: 'hocuspocus', doc: key.split('\0')[0], reason }, 'Hocuspocus document refused')
    this.send(framed(key, enc => {
      encoding.writeVarUint(enc, HocuspocusType.auth)
      encoding.writeVarUint(enc, AuthSub.permissionDenied)
      encoding.writeVarString(enc, reason)
    }))
  }

  private authenticate (key: string, entry: Attached, token: string): void {
    if (!DOC_NAME.test(entry.name)) return this.deny(key, 'document: the name must be 1 to 128 of A-Z a-z 0-9 _ . : @ / -')
    entry.verifying = true
    // messages of the document meanwhile are queued (entry.queue), as before an Auth
    this.opts.verify(token).then(principal => {
      entry.verifying = false
      if (!entry.closed && this.attached.get(key) === entry) this.authenticated(key, entry, principal)
    }, err => {
      entry.verifying = false
      if (!entry.closed && this.attached.get(key) === entry) this.deny(key, `token: ${(err as Error).message}`)
    })
  }

  private authenticated (key: string, entry: Attached, principal: Principal | null): void {
    const access = accessTo(principal, entry.name)
    if (access === null) return this.deny(key, `document: the token's rooms claim does not include ${entry.name}`)
    this.opts.authenticated(principal)
    const readOnly = access === 'read'
    const send = (message: Uint8Array) => {
      if (!entry.closed) this.session.sendFrame(documentFrame(key, message))
    }
    // SyncStatus, the same two frames for every update of the document
    const syncStatus = [false, true].map(saved => binaryFrame(framed(key, enc => { encoding.writeVarUint(enc, HocuspocusType.syncStatus); encoding.writeVarUint(enc, saved ? 1 : 0) })))
    const peer: Peer = {
      send,
      readOnly,
      stateless: payload => {
        const enc = encoding.createEncoder()
        encoding.writeVarUint(enc, HocuspocusType.stateless)
        encoding.writeVarString(enc, payload)
        send(encoding.toUint8Array(enc))
      }
    }
    entry.peer = peer
    this.send(framed(key, enc => {
      encoding.writeVarUint(enc, HocuspocusType.auth)
      encoding.writeVarUint(enc, AuthSub.authenticated)
      encoding.writeVarString(enc, readOnly ? 'readonly' : 'read-write')
    }))
    const clientId = principal?.sub ?? null
    const events = this.opts.events(entry.name, clientId, send)
    this.opts.documents.open(entry.name, peer).then(doc => {
      if (entry.closed) {
        this.opts.documents.leave(doc, peer)
        return
      }
      entry.session = new DocumentSession(doc, peer, this.budget, {
        ...events,
        refused: (code, reason) => {
          events.refused(code, reason)
          this.refuse(key, reason)
        },
        acked: saved => {
          events.acked(saved)
          if (!entry.closed) this.session.sendFrame(syncStatus[saved ? 1 : 0])
        }
      }, this.opts.log)
      this.opts.log.info({ event: 'yjs.connection.open', protocol: 'hocuspocus', doc: entry.name, clientId, readOnly }, 'Yjs document opened')
      entry.session.greet()
      const queued = entry.queue ?? []
      entry.queue = null
      entry.queuedBytes = 0
      for (const m of queued) this.handle(framed(key, enc => encoding.writeUint8Array(enc, m)))
    }, err => {
      this.opts.log.error({ event: 'yjs.load_failed', doc: entry.name, err }, 'could not load a document')
      this.deny(key, 'document: could not be loaded, try again later')
    })
  }

  private detach (key: string, entry: Attached): void {
    entry.closed = true
    entry.queue = null
    entry.queuedBytes = 0
    this.attached.delete(key)
    const { session, peer } = entry
    if (session && peer) {
      const leave = () => this.opts.documents.leave(session.doc, peer)
      session.drained().then(leave, leave)
    }
  }

  /** The socket closed: every document is left once its messages in flight are handled. */
  closed (): void {
    for (const [key, entry] of [...this.attached]) this.detach(key, entry)
  }
}
