import fp from 'fastify-plugin'
import connections, { type ConnectionsOptions } from './connections.js'
import auth, { type AuthOptions } from './auth.js'
import shutdown, { type ShutdownOptions } from './shutdown.js'
import dispatcher, { type DispatcherOptions } from './dispatcher.js'
import jsonLimits, { type JsonLimitsOptions } from './json-limits.js'
import websocket, { type WebSocketOptions } from './websocket.js'
import limits, { type LimitsOptions } from './limits.js'
import pendingConnections, { type PendingConnectionsOptions } from './pending-connections.js'
import heartbeat, { type HeartbeatOptions } from './heartbeat.js'

export { default as connections, Connection, ConnectionRegistry, SendBufferPolicy, textFrame, binaryFrame, CLOSE_CODES } from './connections.js'
export type { ConnectionsOptions, Traffic, SessionProtocol, CloseReason, ShutdownNotice, MessageRateLimits } from './connections.js'
export { default as auth, tokenRequired, refuseUnauthenticated, tokenOf, Auth, AuthError, isAdmin, ADMIN_ROLE, ADMIN_READONLY_ROLE } from './auth.js'
export { accessTo, allows, mayWrite, maySendAs, parseRoomsClaim, visibleRooms, READ_ONLY_PREFIX, SERVICE_ROLE } from './access.js'
export type { Access, RoomPattern } from './access.js'
export type { RoomAction } from './auth.js'
export type { AuthOptions, StaticToken } from './auth.js'
export { default as shutdown } from './shutdown.js'
export type { ShutdownOptions } from './shutdown.js'
export { default as dispatcher, Dispatcher, RequestId } from './dispatcher.js'
export type { DispatcherOptions, MessageHandler, AroundMessage, DispatchEvent, RoutedMessage, MessageOutcome } from './dispatcher.js'
export { default as jsonLimits, jsonDepth, tooDeepField, DEFAULT_JSON_MAX_DEPTH } from './json-limits.js'
export type { JsonLimitsOptions } from './json-limits.js'
export { default as websocket } from './websocket.js'
export type { WebSocketOptions, WebSocket, WebsocketHandler } from './websocket.js'
export { default as limits, ConnectionLimits, LocalClientSlots } from './limits.js'
export type { LimitsOptions, ClientSlotCounter, SlotResult } from './limits.js'
export { default as pendingConnections, PendingConnections, trustedPeerOf } from './pending-connections.js'
export type { PendingConnectionsOptions } from './pending-connections.js'
export { default as heartbeat, Heartbeat } from './heartbeat.js'
export { MessageBucket } from './message-bucket.js'
export { default as upgradeRoutes } from './upgrade.js'
export type { UpgradeRoute, DeclareUpgradeRoute } from './upgrade.js'
export type { HeartbeatOptions } from './heartbeat.js'

export interface TransportOptions {
  connections?: ConnectionsOptions
  auth?: AuthOptions
  shutdown?: ShutdownOptions
  dispatcher?: DispatcherOptions
  jsonLimits?: JsonLimitsOptions
  websocket?: WebSocketOptions
  limits: LimitsOptions
  pendingConnections?: PendingConnectionsOptions
  heartbeat?: HeartbeatOptions
}

/**
 * The WebSocket transport in one registration, in app.ts's order: the
 * connection registry, tokens, shutdown, the dispatcher and its limits, the
 * socket server, connection and handshake limits, the heartbeat.
 * Needs `core` (config, identity) and `observability` (status, metrics).
 */
export default fp<TransportOptions>(async function transport (app, opts) {
  await app.register(connections, opts.connections ?? {})
  await app.register(auth, opts.auth ?? {})
  await app.register(shutdown, opts.shutdown ?? {})
  await app.register(dispatcher, opts.dispatcher ?? {})
  await app.register(jsonLimits, opts.jsonLimits ?? {})
  await app.register(websocket, opts.websocket ?? {})
  await app.register(limits, opts.limits)
  await app.register(pendingConnections, opts.pendingConnections ?? {})
  await app.register(heartbeat, opts.heartbeat ?? {})
}, { name: 'transport', fastify: '5.x', dependencies: ['config', 'identity', 'status'] })
