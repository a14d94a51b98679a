import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import type { FastifyBaseLogger } from 'fastify'
import { DocumentError, MessageType, type CollabDocument, type Peer } from './documents.js'

/** Per-connection update budget (YJS_UPDATES_PER_SECOND, updates and step 2 alike): `perSecond` sustained, twice that as a burst. */
export class UpdateBudget {
  private tokens: number
  private last = Date.now()
  constructor (private readonly perSecond: number) {
    this.tokens = perSecond * 2
  }

  take (): boolean {
    const now = Date.now()
    this.tokens = Math.min(this.perSecond * 2, this.tokens + (now - this.last) * this.perSecond / 1000)
    this.last = now
    if (this.tokens < 1) return false
    this.tokens--
    return true
  }
}

export interface DocumentSessionEvents {
  /** An update was refused (limit, bad encoding, read-only, store failure); `reason` names the field and the limit. */
  refused (code: string, reason: string): void
  /** An update was committed and relayed; `acked` once per step 2/update, in order (Hocuspocus's SyncStatus). */
  acked (saved: boolean): void
  /** Over the update rate: the connection should be closed so the provider resyncs later (nothing is lost). */
  overRate (): void
}

/**
 * One connection's traffic for one document, in y-websocket framing (message
 * type + body) — Hocuspocus uses the same messages after its document name.
 * Messages are handled one at a time, in arrival order.
 */
export class DocumentSession {
  private chain: Promise<void> = Promise.resolve()

  constructor (
    readonly doc: CollabDocument,
    readonly peer: Peer,
    private readonly budget: UpdateBudget,
    private readonly events: DocumentSessionEvents,
    private readonly log: FastifyBaseLogger
  ) {}

  /** What the server sends first: its step 1 (so offline edits are uploaded) and the awareness states. */
  greet (): void {
    this.peer.send(this.doc.step1())
    const states = this.doc.awarenessStates()
    if (states) this.peer.send(states)
  }

  handle (message: Uint8Array): void {
    this.chain = this.chain.then(() => this.process(message)).catch(err => {
      this.log.warn({ event: 'yjs.message_failed', doc: this.doc.name, err }, 'a document message could not be handled')
    })
  }

  /** Resolves when the messages received so far are handled. */
  drained (): Promise<void> {
    return this.chain
  }

  private async process (message: Uint8Array): Promise<void> {
    const decoder = decoding.createDecoder(message)
    let type: number
    try {
      type = decoding.readVarUint(decoder)
    } catch {
      this.events.refused('invalid_message', 'message: must start with a message type (varint)')
      return
    }
    switch (type) {
      case MessageType.sync: return this.sync(decoder)
      case MessageType.awareness: {
        let update: Uint8Array
        try {
          update = decoding.readVarUint8Array(decoder)
          this.doc.applyAwareness(update, this.peer)
        } catch (err) {
          this.events.refused('invalid_message', err instanceof DocumentError ? err.message : 'awareness: not an awareness update')
        }
        return
      }
      case MessageType.queryAwareness: {
        const states = this.doc.awarenessStates()
        if (states) this.peer.send(states)
        break
      }
      // auth (2) is server-to-client in y-websocket; unknown types are ignored like the reference server does
    }
  }

  private async sync (decoder: decoding.Decoder): Promise<void> {
    let sub: number
    let payload: Uint8Array
    try {
      sub = decoding.readVarUint(decoder)
      payload = decoding.readVarUint8Array(decoder)
    } catch {
      this.events.refused('invalid_message', 'sync: truncated message')
      return
    }
    if (sub === syncProtocol.messageYjsSyncStep1) {
      let reply: Uint8Array
      try {
        reply = this.doc.step2(payload)
      } catch {
        this.events.refused('invalid_message', 'sync step 1: not a state vector')
        return
      }
      this.peer.send(reply)
      return
    }
    if (sub !== syncProtocol.messageYjsSyncStep2 && sub !== syncProtocol.messageYjsUpdate) {
      this.events.refused('invalid_message', `sync: unknown sub-type ${sub}`)
      return
    }
    if (this.peer.readOnly) {
      let adds = true
      try { adds = !this.doc.contains(payload) } catch {}
      if (adds) this.events.refused('read_only', 'update: this token gives read-only access to the document')
      this.events.acked(!adds)
      return
    }
    // step 2 counts as an update: a client could otherwise send every change as a step 2
    if (!this.budget.take()) {
      this.events.overRate()
      return
    }
    try {
      await this.doc.submit(payload, this.peer, sub === syncProtocol.messageYjsSyncStep2)
      this.events.acked(true)
    } catch (err) {
      if (!(err instanceof DocumentError)) throw err
      this.events.refused(err.code, err.message)
      this.events.acked(false)
    }
  }
}

/** y-websocket's `permission denied` auth message: the provider logs its reason. */
export function permissionDenied (reason: string): Uint8Array {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MessageType.auth)
  encoding.writeVarUint(enc, 0)
  encoding.writeVarString(enc, reason)
  return encoding.toUint8Array(enc)
}
