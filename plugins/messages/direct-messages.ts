import fp from 'fastify-plugin'
import type { ClientDirectory } from '../cluster/index.js'
import type { DirectMessage } from './inbox.js'
import { uuid } from '../core/ids.js'
import type { IdempotencyClaim } from '../store/interface.js'
import { clientKeys, type IdempotentWrites } from '../store/idempotency.js'

import { ClientId, MessageText } from '../../protocol/schemas.js'
import { SendFields } from '../../protocol/client-frames.js'

export { ClientId, MessageText }

export interface SendResult {
  messageId: string
  delivered: number
  queued: boolean
}

/** Delivers a serialized message to every connection of a client id here and says how many it reached. */
export type DeliverToClient = (clientId: string, frame: string) => number

/**
 * A message goes to the recipient's connections here and, through the client
 * directory, on the other instances; `delivered` counts only connections it reached.
 * Reached nowhere, it is queued in the inbox.
 */
export class DirectMessages {
  constructor (
    private readonly local: DeliverToClient,
    private readonly clients: ClientDirectory,
    private readonly queue: (clientId: string, m: DirectMessage, claim?: IdempotencyClaim) => Promise<void>,
    private readonly idempotency?: IdempotentWrites
  ) {
    // a frame from another instance for a client whose connection here just closed waits in the inbox
    clients.onClientFrame((clientId, frame) => {
      if (local(clientId, frame) > 0) return
      queue(clientId, JSON.parse(frame) as DirectMessage).catch(() => {})
    })
  }

  /** Connections the frame reached, here and on the other instances. */
  async deliver (clientId: string, frame: string): Promise<number> {
    const here = this.local(clientId, frame)
    // one instance: nobody else to ask (no promise chain per message)
    if (this.clients.kind === 'local') return here
    // a client connected here still gets the message while the other instances cannot be reached
    if (here > 0) return here + await this.clients.publishToClient(clientId, frame).catch(() => 0)
    return this.clients.publishToClient(clientId, frame)
  }

  /**
   * Resolves with what was delivered; on one instance a recipient connected
   * here costs no await (the HTTP route and the dispatcher both await it once).
   * With a claim: a key already used throws DuplicateKeyError before anything is
   * sent; a queued message commits its record with it; a live delivery records
   * its result right after (not atomic with it: a crash in between can let a
   * retry deliver it again).
   */
  send (from: string, to: string, text: string, claim?: IdempotencyClaim): Promise<SendResult> {
    const message: DirectMessage = { type: 'message', messageId: uuid(), from, to, text, timestamp: new Date().toISOString() }
    const frame = JSON.stringify(message)
    if (!(claim && this.idempotency) && this.clients.kind === 'local') {
      const delivered = this.local(to, frame)
      if (delivered > 0) return Promise.resolve({ messageId: message.messageId, delivered, queued: false })
    }
    return this.sendFar(to, message, frame, claim)
  }

  private async sendFar (to: string, message: DirectMessage, frame: string, claim?: IdempotencyClaim): Promise<SendResult> {
    if (claim && this.idempotency) await this.idempotency.refuseUsed(claim)
    const delivered = await this.deliver(to, frame)
    if (delivered > 0) {
      const result = { messageId: message.messageId, delivered, queued: false }
      if (claim && this.idempotency) await this.idempotency.remember(claim, result)
      return result
    }
    const result = { messageId: message.messageId, delivered: 0, queued: true }
    await this.queue(to, message, claim && { ...claim, result })
    return result
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    directMessages: DirectMessages
  }
}

export default fp(async function directMessages (app) {
  const metrics = app.metrics
  const dm = new DirectMessages(
    (clientId, frame) => {
      const reached = app.sessions.sendToClient(clientId, frame)
      metrics?.messagesOutByType.add('message', reached)
      return reached
    },
    app.clients,
    async (clientId, message, claim) => {
      await app.inbox.push(clientId, message, claim)
      metrics?.inboxQueued.inc()
    },
    app.idempotency
  )
  app.decorate('directMessages', dm)

  app.dispatcher.register('send', SendFields, async (conn, msg) => {
    app.auth.authorizeSender(conn.principal, conn.clientId)
    const { value, duplicate } = await app.idempotency.run(clientKeys(conn.clientId), msg.idempotencyKey, { type: 'send', to: msg.to, text: msg.text },
      async claim => dm.send(conn.clientId, msg.to, msg.text, claim), result => result as SendResult)
    return duplicate ? { type: 'ack', ...value, duplicate } : { type: 'ack', ...value }
  })

  // Queued messages go out right after `welcome`, oldest first, before any live one.
  app.sessions.onOpen(conn => {
    if (conn.protocol.addressable !== true) return
    conn.hold()
    app.inbox.drain(conn.clientId).then(async queued => {
      if (!conn.open) {
        // Gone before the replay: the messages wait for the next connection.
        for (const m of queued) await app.inbox.push(conn.clientId, m)
        return
      }
      for (const m of queued) conn.send(m)
      metrics?.inboxDelivered.inc(queued.length)
      if (queued.length > 0) app.log.info({ event: 'inbox.delivered', clientId: conn.clientId, count: queued.length }, 'delivered queued direct messages')
    }, err => {
      // a failed commit was logged once by the store's health; the messages stay queued
      if (!(err as { reported?: boolean }).reported) app.log.error({ event: 'inbox.drain_failed', clientId: conn.clientId, err }, 'could not read queued messages')
    }).finally(() => conn.release())
  })
}, { name: 'direct-messages', fastify: '5.x', dependencies: ['sessions', 'dispatcher', 'inbox', 'cluster', 'store', 'auth', 'metrics'] })
