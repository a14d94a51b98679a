import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as syncProtocol from 'y-protocols/sync'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import type { FastifyBaseLogger } from 'fastify'
import { jsonTextDepth, type DocumentStore, type StoredDocument } from './deps.js'

/** Message types shared by y-websocket and Hocuspocus (after Hocuspocus's document name). */
export const MessageType = { sync: 0, awareness: 1, auth: 2, queryAwareness: 3 } as const

/** One connection's view of one document: where that document's messages go. */
export interface Peer {
  /** A message in y-websocket framing (type + body); the protocol adds its own envelope. */
  send (message: Uint8Array): void
  readonly readOnly: boolean
  /** A Hocuspocus stateless payload broadcast to the document (y-websocket has no such message). */
  stateless?: (payload: string) => void
  /**
   * Send this peer its own committed updates back (y-websocket 4 counts a local
   * edit as confirmed only when the server returns it, as the reference server
   * does by broadcasting to every connection). Off for Hocuspocus: SyncStatus acks.
   */
  readonly echo?: boolean
}

/** Origin of what another instance sent: relayed to every local peer, never published again. */
export const REMOTE = Symbol('remote instance')

/**
 * The origin of an update applied before it is committed: what it changed is
 * held here, and relayed only once the update is in the store.
 */
class Held {
  readonly messages: Uint8Array[] = []
  constructor (readonly peer: Peer | null) {}
}

/** An update waiting for its turn to be committed. */
interface Submission {
  update: Uint8Array
  origin: Peer | null
  checkContained: boolean
  resolve: (changed: boolean) => void
  reject: (err: Error) => void
}

/** An update of the batch being committed: `held` null when it added nothing (it is not stored). */
interface Applied {
  submission: Submission
  held: Held | null
}

/** Where committed updates and awareness changes go to reach the other instances. */
export interface DocumentRelay {
  /** Resolves once this instance receives the document's messages from the others. */
  subscribe (name: string): Promise<void>
  unsubscribe (name: string): void
  publish (name: string, message: Uint8Array): void
  /** An awareness client of a local peer is present: if this instance dies, the others remove it after its TTL. */
  memberJoined (name: string, awarenessClient: number): void
  memberLeft (name: string, awarenessClient: number): void
}

/**
 * Between instances only (never sent to a provider): "these awareness clients'
 * instance died". The fanout announces them to one instance; it tells the others.
 */
export const GONE_MESSAGE = 100

export class DocumentError extends Error {
  constructor (readonly code: 'update_too_large' | 'document_too_large' | 'invalid_update' | 'store_failed', message: string) {
    super(message)
  }
}

export interface DocumentsOptions {
  store: DocumentStore
  log: FastifyBaseLogger
  /** Bytes of one update [WS_MAX_PAYLOAD]. */
  maxUpdateBytes: number
  /** Bytes a document may take in the store (snapshot + updates not yet compacted). */
  maxDocumentBytes: number
  /** The other instances (none: a no-op). */
  relay?: DocumentRelay
  /** How long a document with no connection stays in memory. */
  unloadAfterMs: number
  /** Updates appended after which the document is compacted into a snapshot. */
  compactAfterUpdates: number
  /** JSON_MAX_DEPTH: the deepest an awareness state may nest [64]. */
  maxJsonDepth?: number
  /**
   * This instance is the only writer of its documents (SQLite, one process per
   * data directory, no other instance): the Y.Doc in memory holds exactly
   * what the store holds, so a compaction encodes it instead of reading and
   * replaying the store.
   */
  exclusiveStore?: boolean
}

/**
 * Reads an awareness update the way y-protocols does (count, then client id,
 * clock and JSON state each) and refuses one whose state is not JSON or nests
 * deeper than `maxDepth`: it would be parsed and re-serialized for every peer.
 */
function checkAwareness (update: Uint8Array, maxDepth: number): void {
  const decoder = decoding.createDecoder(update)
  let count: number
  try {
    count = decoding.readVarUint(decoder)
  } catch {
    throw new DocumentError('invalid_update', 'awareness: not an awareness update (truncated)')
  }
  for (let n = 0; n < count; n++) {
    let state: string
    try {
      decoding.readVarUint(decoder)
      decoding.readVarUint(decoder)
      state = decoding.readVarString(decoder)
    } catch {
      throw new DocumentError('invalid_update', 'awareness: not an awareness update (truncated)')
    }
    if (jsonTextDepth(state, maxDepth) < 0) throw new DocumentError('invalid_update', `awareness: a state nests deeper than ${maxDepth} levels (limit ${maxDepth}, JSON_MAX_DEPTH)`)
    try {
      JSON.parse(state)
    } catch {
      throw new DocumentError('invalid_update', 'awareness: a state is not JSON')
    }
  }
}

function messageOf (write: (enc: encoding.Encoder) => void): Uint8Array {
  const enc = encoding.createEncoder()
  write(enc)
  return encoding.toUint8Array(enc)
}

/** The empty update (no structs, no deletes) that a provider with nothing new sends as its step 2. */
function isEmptyUpdate (update: Uint8Array): boolean {
  return update.length === 2 && update[0] === 0 && update[1] === 0
}

/**
 * A document in memory: its Y.Doc (garbage collected), its awareness, its
 * peers. Updates are handled one at a time: applied (so an update Yjs cannot
 * apply is refused before it is stored), committed, and only then relayed.
 * When an applied update cannot be kept (the store refused it), the Y.Doc is
 * rebuilt from the store, so memory never holds what the store does not.
 */
export class CollabDocument {
  private ydoc = new Y.Doc()
  readonly awareness = new awarenessProtocol.Awareness(this.ydoc)
  readonly peers = new Set<Peer>()
  /** Awareness client ids each peer announced, removed when it leaves. */
  private readonly clientsOf = new Map<Peer, Set<number>>()
  private chain: Promise<unknown> = Promise.resolve()
  /** Updates submitted since the last batch began, and whether a batch for them is on the chain. */
  private waiting: Submission[] = []
  private drainQueued = false
  private sinceCompaction = 0
  /** Memory holds an update the store refused and could not yet be rebuilt from the store. */
  private diverged = false
  lastId = 0
  bytes = 0
  unloadTimer: NodeJS.Timeout | null = null

  constructor (readonly name: string, private readonly opts: DocumentsOptions) {
    this.awareness.setLocalState(null)
    this.watch(this.ydoc)
    this.awareness.on('update', ({ added, updated, removed }: { added: number[], updated: number[], removed: number[] }, origin: unknown) => {
      const changed = [...added, ...updated, ...removed]
      if (origin && this.peers.has(origin as Peer)) {
        const ids = this.clientsOf.get(origin as Peer)
        if (ids) {
          for (const id of added) {
            ids.add(id)
            this.opts.relay?.memberJoined(this.name, id)
          }
          for (const id of removed) {
            ids.delete(id)
            this.opts.relay?.memberLeft(this.name, id)
          }
        }
      }
      const message = messageOf(enc => {
        encoding.writeVarUint(enc, MessageType.awareness)
        encoding.writeVarUint8Array(enc, awarenessProtocol.encodeAwarenessUpdate(this.awareness, changed))
      })
      // to the sender too: the echo is what keeps an idle provider's watchdog quiet
      for (const peer of this.peers) peer.send(message)
      if (origin !== REMOTE) this.opts.relay?.publish(this.name, message)
    })
  }

  /** The document's content (replaced, never mutated behind the peers' backs, when an update is rolled back). */
  get doc (): Y.Doc {
    return this.ydoc
  }

  /** Relays what changes the Y.Doc: at once, or once committed for an update being committed (Held). */
  private watch (ydoc: Y.Doc): void {
    ydoc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin === 'store') return
      const message = messageOf(enc => {
        encoding.writeVarUint(enc, MessageType.sync)
        syncProtocol.writeUpdate(enc, update)
      })
      if (origin instanceof Held) {
        origin.messages.push(message)
        return
      }
      for (const peer of this.peers) if (peer !== origin) peer.send(message)
      if (origin !== REMOTE) this.opts.relay?.publish(this.name, message)
    })
  }

  /**
   * Replays what the store holds. A stored update that Yjs cannot apply (an
   * earlier version stored such updates unchecked) is skipped with one logged
   * error, so the document still loads.
   */
  load (stored: StoredDocument): void {
    try {
      this.ydoc.transact(() => {
        if (stored.snapshot) Y.applyUpdate(this.ydoc, stored.snapshot)
        for (const update of stored.updates) Y.applyUpdate(this.ydoc, update)
      }, 'store')
    } catch {
      // applied one by one on a fresh Y.Doc, so that a partial apply leaves nothing behind
      this.replace(replay(stored, (index, err) => {
        this.opts.log.error({ event: 'yjs.update_skipped', doc: this.name, updateId: index < 0 ? 'snapshot' : stored.ids[index], bytes: index < 0 ? stored.snapshot?.length : stored.updates[index].length, reason: (err as Error).message }, 'a stored update cannot be applied: skipped')
      }))
    }
    this.lastId = stored.lastId
    this.bytes = stored.bytes
    this.sinceCompaction = stored.updates.length
  }

  private replace (ydoc: Y.Doc): void {
    const old = this.ydoc
    this.ydoc = ydoc
    this.watch(ydoc)
    // the awareness keeps its states and its reference to the first Y.Doc (only its client id): not destroyed
    if (old !== ydoc && old !== this.awareness.doc) old.destroy()
  }

  /** Rebuilds the Y.Doc from the store: what memory applied and the store did not commit is gone. */
  private async reload (): Promise<void> {
    const stored = await this.opts.store.load(this.name)
    this.replace(replay(stored, (index, err) => {
      this.opts.log.error({ event: 'yjs.update_skipped', doc: this.name, updateId: index < 0 ? 'snapshot' : stored.ids[index], reason: (err as Error).message }, 'a stored update cannot be applied: skipped')
    }))
    this.lastId = stored.lastId
    this.bytes = stored.bytes
    this.sinceCompaction = stored.updates.length
  }

  join (peer: Peer): void {
    this.peers.add(peer)
    this.clientsOf.set(peer, new Set())
  }

  leave (peer: Peer): void {
    this.peers.delete(peer)
    const ids = this.clientsOf.get(peer)
    this.clientsOf.delete(peer)
    if (ids && ids.size > 0) {
      for (const id of ids) this.opts.relay?.memberLeft(this.name, id)
      awarenessProtocol.removeAwarenessStates(this.awareness, [...ids], null)
    }
  }

  /** Awareness clients of an instance that died: removed here (each instance removes them itself). */
  removeGone (clients: number[]): void {
    const known = clients.filter(id => this.awareness.getStates().has(id))
    if (known.length > 0) awarenessProtocol.removeAwarenessStates(this.awareness, known, REMOTE)
  }

  /** The server's step 1 (its state vector). */
  step1 (): Uint8Array {
    return messageOf(enc => {
      encoding.writeVarUint(enc, MessageType.sync)
      syncProtocol.writeSyncStep1(enc, this.doc)
    })
  }

  /** The answer to a peer's step 1: what its state vector lacks. */
  step2 (stateVector: Uint8Array): Uint8Array {
    return messageOf(enc => {
      encoding.writeVarUint(enc, MessageType.sync)
      encoding.writeVarUint(enc, syncProtocol.messageYjsSyncStep2)
      encoding.writeVarUint8Array(enc, Y.encodeStateAsUpdate(this.doc, stateVector))
    })
  }

  /** Every known awareness state, or null when there is none. */
  awarenessStates (): Uint8Array | null {
    const clients = [...this.awareness.getStates().keys()]
    if (clients.length === 0) return null
    return messageOf(enc => {
      encoding.writeVarUint(enc, MessageType.awareness)
      encoding.writeVarUint8Array(enc, awarenessProtocol.encodeAwarenessUpdate(this.awareness, clients))
    })
  }

  /** Whether the update adds nothing to the document. */
  contains (update: Uint8Array): boolean {
    return isEmptyUpdate(update) || Y.snapshotContainsUpdate(Y.snapshot(this.ydoc), update)
  }

  /** A peer's awareness update, checked before it is applied (throws DocumentError naming what is wrong). */
  applyAwareness (update: Uint8Array, peer: Peer): void {
    checkAwareness(update, this.opts.maxJsonDepth ?? 64)
    awarenessProtocol.applyAwarenessUpdate(this.awareness, update, peer)
  }

  /**
   * Commits an update, then applies and relays it. Resolves with whether it
   * changed anything; rejects with a DocumentError (nothing stored, nothing relayed).
   * Updates submitted while earlier ones are being committed wait together
   * and are committed together (`commitBatch`).
   */
  submit (update: Uint8Array, origin: Peer | null, checkContained = true): Promise<boolean> {
    const done = new Promise<boolean>((resolve, reject) => {
      this.waiting.push({ update, origin, checkContained, resolve, reject })
    })
    if (!this.drainQueued) {
      this.drainQueued = true
      const run = this.chain.then(() => {
        this.drainQueued = false
        const batch = this.waiting.splice(0)
        // an unexpected error reaches every update of the batch not yet settled (settling twice does nothing)
        return this.commitBatch(batch).catch(err => { for (const submission of batch) submission.reject(err as Error) })
      })
      this.chain = run.catch(() => {})
    }
    return done
  }

  /**
   * The updates that waited while the last batch was committed, in order:
   * each is checked and applied on its own (what it changes held back), an
   * update Yjs cannot apply is refused before anything is stored, then the
   * applied ones are committed together (one store commit) and only then
   * relayed and resolved, in order. An update that adds nothing to what
   * memory holds waits for the commit of what it depends on.
   */
  private async commitBatch (batch: Submission[]): Promise<void> {
    let applied: Applied[] = []
    for (const submission of batch) {
      try {
        const step = this.applyOne(submission, applied)
        if (step === 'rollback' || step === 'diverged') {
          // the updates applied so far are committed first: a rebuild from the store would drop them
          await this.flush(applied)
          applied = []
          if (step === 'diverged') {
            await this.rollBack()
            if (this.diverged) throw new DocumentError('store_failed', 'the document cannot be read from the store; the update was not applied')
            const again = this.applyOne(submission, applied)
            if (again !== 'rollback' && again !== 'diverged') continue
          }
          // applied in part: memory is rebuilt from the store (the updates committed above included)
          await this.rollBack()
          const refused: DocumentError = this.unappliable ?? new DocumentError('invalid_update', 'update: Yjs cannot apply it')
          throw refused
        }
      } catch (err) {
        submission.reject(err as Error)
      }
    }
    await this.flush(applied)
    // here, not in `flush`: memory may hold a partial apply until its rollback
    if (this.sinceCompaction >= this.opts.compactAfterUpdates) await this.compact()
  }

  /** Why the last update could not be applied (set by `applyOne`, thrown once its partial apply is undone). */
  private unappliable: DocumentError | undefined

  /**
   * Checks and applies one update (throws a DocumentError, having changed
   * nothing), or says that the document must first be rebuilt from the store:
   * 'diverged' (memory holds what the store refused earlier; nothing applied)
   * or 'rollback' (Yjs applied part of an update it then refused: `unappliable`).
   */
  private applyOne (submission: Submission, applied: Applied[]): 'applied' | 'unchanged' | 'diverged' | 'rollback' {
    const { update, origin, checkContained } = submission
    const { maxUpdateBytes, maxDocumentBytes } = this.opts
    if (update.length > maxUpdateBytes) throw new DocumentError('update_too_large', `update: ${update.length} bytes, over the limit of ${maxUpdateBytes} (YJS_MAX_UPDATE_BYTES)`)
    if (isEmptyUpdate(update)) {
      submission.resolve(false)
      return 'unchanged'
    }
    if (this.diverged) return 'diverged'
    try {
      Y.parseUpdateMeta(update)
    } catch {
      throw new DocumentError('invalid_update', 'update: not a Yjs update (v1 encoding)')
    }
    let bytes = this.bytes
    for (const a of applied) if (a.held) bytes += a.submission.update.length
    if (bytes + update.length > maxDocumentBytes) {
      let contained = false
      if (checkContained) try { contained = Y.snapshotContainsUpdate(Y.snapshot(this.ydoc), update) } catch {}
      if (contained) {
        applied.push({ submission, held: null })
        return 'unchanged'
      }
      throw new DocumentError('document_too_large', `document: ${bytes + update.length} bytes with this update, over the limit of ${maxDocumentBytes} (YJS_MAX_DOCUMENT_BYTES)`)
    }
    const store = this.ydoc.store
    const pendingBefore = [store.pendingStructs, store.pendingDs]
    const held = new Held(origin)
    try {
      Y.applyUpdate(this.ydoc, update, held)
    } catch (err) {
      this.opts.log.warn({ event: 'yjs.update_unappliable', doc: this.name, bytes: update.length, reason: (err as Error).message }, 'an update Yjs cannot apply was refused')
      const refused = new DocumentError('invalid_update', `update: Yjs cannot apply it (${(err as Error).message})`)
      if (held.messages.length > 0 || store.pendingStructs !== pendingBefore[0] || store.pendingDs !== pendingBefore[1]) {
        this.unappliable = refused
        return 'rollback'
      }
      throw refused
    }
    // nothing new and nothing waiting for a missing dependency: already in the document
    if (held.messages.length === 0 && store.pendingStructs === pendingBefore[0] && store.pendingDs === pendingBefore[1]) {
      applied.push({ submission, held: null })
      return 'unchanged'
    }
    applied.push({ submission, held })
    return 'applied'
  }

  /**
   * Commits the applied updates (their appends share one store commit), then
   * relays and resolves each, in order. Those the store refused are rolled
   * back (the Y.Doc rebuilt from the store) and rejected; an update that
   * added nothing is resolved once what it came after is committed.
   */
  private async flush (applied: Applied[]): Promise<void> {
    if (applied.length === 0) return
    const appends = applied.map(a => a.held ? this.opts.store.append(this.name, a.submission.update) : null)
    const outcomes = await Promise.allSettled(appends.map(p => p ?? Promise.resolve(0)))
    const failed = outcomes.some(o => o.status === 'rejected')
    if (failed) {
      const first = outcomes.find(o => o.status === 'rejected') as PromiseRejectedResult
      this.opts.log.error({ event: 'yjs.store_failed', doc: this.name, err: first.reason }, 'could not commit a document update')
      await this.rollBack()
    }
    let stored = 0
    for (let i = 0; i < applied.length; i++) {
      const { submission, held } = applied[i]
      const outcome = outcomes[i]
      if (held === null) {
        // what it held was already in memory: in the store too, unless a commit above failed
        let kept = !failed
        if (!kept) try { kept = this.contains(submission.update) } catch {}
        if (!kept) {
          submission.reject(new DocumentError('store_failed', 'the update could not be stored; it was not applied'))
          continue
        }
        this.confirm(submission.update, submission.origin)
        submission.resolve(false)
        continue
      }
      if (outcome.status === 'rejected') {
        submission.reject(new DocumentError('store_failed', 'the update could not be stored; it was not applied'))
        continue
      }
      if (!failed) {
        // after a rollback, the rebuild from the store counted them already
        this.lastId = outcome.value
        this.bytes += submission.update.length
        stored++
      }
      const origin = submission.origin
      for (const message of held.messages) {
        for (const peer of this.peers) if (peer !== origin || peer.echo === true) peer.send(message)
        this.opts.relay?.publish(this.name, message)
      }
      submission.resolve(true)
    }
    this.sinceCompaction += stored
  }

  /**
   * An update the document already held, sent back to an echo peer as it
   * came: its content is stored, and the provider waits to see it returned.
   */
  private confirm (update: Uint8Array, origin: Peer | null): void {
    if (origin?.echo !== true || !this.peers.has(origin)) return
    origin.send(messageOf(enc => {
      encoding.writeVarUint(enc, MessageType.sync)
      syncProtocol.writeUpdate(enc, update)
    }))
  }

  /**
   * Forgets an applied update that was not committed, by rebuilding the Y.Doc
   * from the store. When the store cannot be read either (Redis down), the
   * document stays `diverged`: every write is refused until a rebuild succeeds,
   * tried again on each write.
   */
  private async rollBack (): Promise<void> {
    try {
      await this.reload()
      this.diverged = false
    } catch (err) {
      if (!this.diverged) this.opts.log.error({ event: 'yjs.rollback_failed', doc: this.name, reason: (err as Error).message }, 'could not rebuild a document from the store: its writes are refused until it can')
      this.diverged = true
    }
  }

  /**
   * Re-encodes what the store holds (snapshot + tail, read together) through
   * a fresh Y.Doc (deleted content garbage collected) into the snapshot,
   * dropping the updates it covers. Read from the store, not from memory: with
   * many instances the store may hold updates this one has not received yet.
   * An exclusive store (`exclusiveStore`) holds what memory holds: the Y.Doc
   * (garbage collected as it goes) is encoded as it is, with no read.
   */
  private async compact (): Promise<void> {
    if (this.sinceCompaction === 0) return
    try {
      let snapshot: Uint8Array
      let upTo: number
      if (this.opts.exclusiveStore === true && !this.diverged) {
        // memory is the store (every update committed before the chain moves on, a refused one rolled back)
        snapshot = Y.encodeStateAsUpdate(this.ydoc)
        upTo = this.lastId
      } else {
        const stored = await this.opts.store.load(this.name)
        const fresh = replay(stored, () => {})
        snapshot = Y.encodeStateAsUpdate(fresh)
        fresh.destroy()
        upTo = stored.lastId
      }
      await this.opts.store.compact(this.name, snapshot, upTo)
      this.bytes = snapshot.length
      this.sinceCompaction = 0
      this.opts.log.debug({ event: 'yjs.compacted', doc: this.name, bytes: snapshot.length }, 'document compacted')
    } catch (err) {
      // the updates are still there: the next compaction covers them
      this.opts.log.warn({ event: 'yjs.compaction_failed', doc: this.name, err }, 'document compaction failed')
    }
  }

  /** An update committed and published by another instance: applied and relayed here, not stored again. */
  applyRemote (update: Uint8Array): void {
    try {
      Y.applyUpdate(this.ydoc, update, REMOTE)
    } catch (err) {
      this.opts.log.warn({ event: 'yjs.message_failed', doc: this.name, err }, 'an update from another instance could not be applied')
    }
  }

  applyRemoteAwareness (update: Uint8Array): void {
    try {
      awarenessProtocol.applyAwarenessUpdate(this.awareness, update, REMOTE)
    } catch {}
  }

  /** Waits for the updates in flight, compacts, and releases the Y.Doc. */
  async close (): Promise<void> {
    const run = this.chain.then(() => this.compact())
    this.chain = run
    await run
    this.awareness.destroy()
    this.ydoc.destroy()
  }
}

/**
 * A fresh Y.Doc holding what the store holds. An update that throws is told
 * to `skipped` (index -1: the snapshot) and left out: the Y.Doc is built again
 * without it, so a partial apply leaves nothing behind.
 */
function replay (stored: StoredDocument, skipped: (index: number, err: unknown) => void): Y.Doc {
  const parts = stored.snapshot ? [stored.snapshot, ...stored.updates] : stored.updates
  const first = stored.snapshot ? -1 : 0
  const bad = new Set<number>()
  for (;;) {
    const ydoc = new Y.Doc()
    let current = -1
    try {
      ydoc.transact(() => {
        for (let i = 0; i < parts.length; i++) {
          if (bad.has(i)) continue
          current = i
          Y.applyUpdate(ydoc, parts[i], 'store')
        }
      }, 'store')
      return ydoc
    } catch (err) {
      ydoc.destroy()
      bad.add(current)
      skipped(current + first, err)
    }
  }
}

/** Applies a message from another instance: a committed update or an awareness change. */
function deliver (doc: CollabDocument, message: Uint8Array): void {
  try {
    const decoder = decoding.createDecoder(message)
    const type = decoding.readVarUint(decoder)
    if (type === MessageType.sync && decoding.readVarUint(decoder) === syncProtocol.messageYjsUpdate) doc.applyRemote(decoding.readVarUint8Array(decoder))
    else if (type === MessageType.awareness) doc.applyRemoteAwareness(decoding.readVarUint8Array(decoder))
    else if (type === GONE_MESSAGE) {
      const ids: number[] = []
      for (let n = decoding.readVarUint(decoder); n > 0; n--) ids.push(decoding.readVarUint(decoder))
      doc.removeGone(ids)
    }
  } catch {}
}

/**
 * The documents in memory: loaded on a first peer, unloaded `unloadAfterMs`
 * after the last one leaves. A failed load leaves nothing behind.
 */
export class Documents {
  private readonly loaded = new Map<string, CollabDocument>()
  private readonly loading = new Map<string, Promise<CollabDocument>>()
  private readonly closing = new Map<string, Promise<void>>()
  /** Messages from other instances for documents being loaded. */
  private readonly early = new Map<string, Uint8Array[]>()
  private closed = false

  constructor (readonly opts: DocumentsOptions) {}

  get size (): number {
    return this.loaded.size
  }

  /** Names of the documents in memory. */
  names (): IterableIterator<string> {
    return this.loaded.keys()
  }

  /** The document, loaded if needed, with `peer` joined. */
  async open (name: string, peer: Peer): Promise<CollabDocument> {
    const doc = await this.get(name)
    if (doc.unloadTimer) {
      clearTimeout(doc.unloadTimer)
      doc.unloadTimer = null
    }
    doc.join(peer)
    return doc
  }

  leave (doc: CollabDocument, peer: Peer): void {
    doc.leave(peer)
    if (doc.peers.size > 0 || this.closed || this.loaded.get(doc.name) !== doc) return
    doc.unloadTimer = setTimeout(() => this.unload(doc), this.opts.unloadAfterMs)
    doc.unloadTimer.unref()
  }

  /** A loaded document, or one loaded for the time of `fn` (HTTP reads and writes). */
  async use<T> (name: string, fn: (doc: CollabDocument) => Promise<T> | T): Promise<T> {
    const peer: Peer = { send () {}, readOnly: true }
    const doc = await this.open(name, peer)
    try {
      return await fn(doc)
    } finally {
      this.leave(doc, peer)
    }
  }

  private async get (name: string): Promise<CollabDocument> {
    if (this.closed) throw new Error('shutting down')
    const ready = this.loaded.get(name)
    if (ready) return ready
    const inFlight = this.loading.get(name)
    if (inFlight) return inFlight
    const load = (async () => {
      await this.closing.get(name) // an unload in progress finishes first (its compaction included)
      const relay = this.opts.relay
      // subscribed before the read: an update committed elsewhere meanwhile arrives here (applying it twice is harmless)
      const early: Uint8Array[] = []
      this.early.set(name, early)
      const doc = new CollabDocument(name, this.opts)
      try {
        await relay?.subscribe(name)
        doc.load(await this.opts.store.load(name))
      } catch (err) {
        relay?.unsubscribe(name)
        doc.awareness.destroy()
        doc.doc.destroy()
        throw err
      } finally {
        this.early.delete(name)
      }
      for (const message of early) deliver(doc, message)
      return doc
    })()
    this.loading.set(name, load)
    try {
      const doc = await load
      this.loaded.set(name, doc)
      return doc
    } finally {
      this.loading.delete(name)
    }
  }

  /** Awareness clients (numbers as strings) of a dead instance, as the fanout announces them. */
  gone (name: string, clients: string[]): void {
    const ids = clients.map(Number).filter(Number.isSafeInteger)
    this.loaded.get(name)?.removeGone(ids)
    this.opts.relay?.publish(name, messageOf(enc => {
      encoding.writeVarUint(enc, GONE_MESSAGE)
      encoding.writeVarUint(enc, ids.length)
      for (const id of ids) encoding.writeVarUint(enc, id)
    }))
  }

  /** A message (y-websocket framing) another instance published for a document. */
  remote (name: string, message: Uint8Array): void {
    const doc = this.loaded.get(name)
    if (doc) deliver(doc, message)
    else this.early.get(name)?.push(message)
  }

  private unload (doc: CollabDocument): Promise<void> {
    doc.unloadTimer = null
    if (doc.peers.size > 0 || this.loaded.get(doc.name) !== doc) return Promise.resolve()
    this.loaded.delete(doc.name)
    this.opts.relay?.unsubscribe(doc.name)
    const done = doc.close().catch(err => {
      this.opts.log.warn({ event: 'yjs.unload_failed', doc: doc.name, err }, 'could not compact a document on unload')
    }).finally(() => this.closing.delete(doc.name))
    this.closing.set(doc.name, done)
    return done
  }

  /** Flushes and releases every document (after the connections are closed). */
  async close (): Promise<void> {
    this.closed = true
    await Promise.allSettled([...this.loading.values()])
    for (const doc of this.loaded.values()) {
      if (doc.unloadTimer) clearTimeout(doc.unloadTimer)
      doc.peers.clear()
    }
    await Promise.all([...this.loaded.values()].map(doc => this.unload(doc)))
    await Promise.all([...this.closing.values()])
  }
}
