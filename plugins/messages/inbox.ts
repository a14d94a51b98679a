import fp from 'fastify-plugin'

import type { DirectMessage } from '../../protocol/frames.js'
import type { InboxStore } from '../store/interface.js'

/**
 * A direct message as it is delivered (`type: 'message'`) and as it waits in an
 * inbox: the wire shape the client package declares (a type-only import, so the
 * browser bundle stays free of server modules and the server restates nothing).
 */
export type { DirectMessage }
export type { InboxStore }

export interface InboxOptions {
  /** How often expired messages are dropped [60000]. The bounds (INBOX_MAX, INBOX_TTL_MS) are the store's options. */
  expireIntervalMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    inbox: InboxStore
  }
}

export default fp<InboxOptions>(async function inbox (app, opts) {
  const store = app.store.inbox
  app.decorate('inbox', store)
  const timer = setInterval(() => {
    store.expire().then(dropped => {
      if (dropped > 0) app.log.info({ event: 'inbox.expired', dropped }, 'expired queued direct messages')
    }, err => app.log.error({ event: 'inbox.expire_failed', err }, 'inbox expiry failed'))
  }, opts.expireIntervalMs ?? 60000).unref()
  app.addHook('onClose', async () => clearInterval(timer))
}, { name: 'inbox', fastify: '5.x', dependencies: ['store'] })
