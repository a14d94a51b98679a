import fp from 'fastify-plugin'
import inbox, { type InboxOptions } from './inbox.js'
import directMessages from './direct-messages.js'

export { default as inbox } from './inbox.js'
export type { InboxOptions, InboxStore, DirectMessage } from './inbox.js'
export { default as directMessages, DirectMessages } from './direct-messages.js'
export type { SendResult, DeliverToClient } from './direct-messages.js'

export type MessagesOptions = InboxOptions

/** Direct messages: `send` over WebSocket and POST /api/send, delivered live or kept in the store's inbox. */
export default fp<MessagesOptions>(async function messages (app, opts) {
  await app.register(inbox, opts)
  await app.register(directMessages)
}, { name: 'messages', fastify: '5.x', dependencies: ['store', 'cluster', 'sessions', 'dispatcher'] })
