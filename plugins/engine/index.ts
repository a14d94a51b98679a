import fp from 'fastify-plugin'
import sessions, { type SessionsOptions } from './sessions.js'
import auth, { type AuthOptions } from './auth.js'
import shutdown, { type ShutdownOptions } from './shutdown.js'
import http2Sessions from './http2-sessions.js'
import jsonLimits, { type JsonLimitsOptions } from './json-limits.js'
import limits, { type LimitsOptions } from './limits.js'
import pendingConnections, { type PendingConnectionsOptions } from './pending-connections.js'
import heartbeat, { type HeartbeatOptions } from './heartbeat.js'
import upgradeRoutes from './upgrade.js'
import messageRate from './message-rate.js'
import proxy, { type ProxyOptions } from './proxy.js'

export { default as sessions, Session, SessionRegistry, SendBufferPolicy, textFrame, binaryFrame, CLOSE_CODES } from './sessions.js'
export type { SessionsOptions, Traffic, SessionProtocol, SessionSocket, FrameSink, CloseReason, ShutdownNotice, MessageRateLimits } from './sessions.js'
export { default as auth, tokenRequired, refuseUnauthenticated, tokenOf, Auth, AuthError, isAdmin, ADMIN_ROLE, ADMIN_READONLY_ROLE } from './auth.js'
export { accessTo, allows, mayWrite, maySendAs, parseRoomsClaim, visibleRooms, READ_ONLY_PREFIX, SERVICE_ROLE } from './access.js'
export type { Access, RoomPattern } from './access.js'
export type { RoomAction } from './auth.js'
export type { AuthOptions, AuthFailure, StaticToken } from './auth.js'
export { PublicKeys, KeyError, parsePublicKey, ASYMMETRIC_ALGORITHMS, SECRET_ALGORITHM, JWKS_MAX_BYTES } from './token-keys.js'
export type { PublicKeyOptions } from './token-keys.js'
export { default as proxy, ProxyClient, ProxyHooks, PROXY_HOOKS, PROXY_URL_VARIABLE, CONNECT_ROOMS_MAX, proxyError } from './proxy.js'
export type { ProxyOptions, ProxyHook, ProxyCaller, ProxyDecision, ProxyOutcome, FailurePolicy, ConnectGrant, ProxyRefused } from './proxy.js'
export { WebhookSender, standardWebhooks, signWebhook, webhookKey } from './webhooks.js'
export type { WebhookSenderOptions, WebhookRequest, WebhookOutbox } from './webhooks.js'
export { default as shutdown } from './shutdown.js'
export { default as http2Sessions } from './http2-sessions.js'
export type { ShutdownOptions } from './shutdown.js'
export { default as jsonLimits, jsonDepth, jsonTextDepth, tooDeepField, DEFAULT_JSON_MAX_DEPTH } from './json-limits.js'
export type { JsonLimitsOptions } from './json-limits.js'
export { default as limits, ConnectionLimits } from './limits.js'
export type { LimitsOptions, SlotResult } from './limits.js'
export { default as pendingConnections, PendingConnections, trustedPeerOf } from './pending-connections.js'
export type { PendingConnectionsOptions } from './pending-connections.js'
export { default as heartbeat, Heartbeat } from './heartbeat.js'
export { MessageBucket } from './message-bucket.js'
export { default as upgradeRoutes } from './upgrade.js'
export type { UpgradeRoute, DeclareUpgradeRoute, StreamRoute, DeclareStreamRoute } from './upgrade.js'
export { HttpStreamSocket, StreamSession, acceptStream, framePayload } from './http-stream.js'
export type { StreamEncoder } from './http-stream.js'
export { default as messageRate, MessageRate } from './message-rate.js'
export type { MessageRateOptions } from './message-rate.js'
export { Sequencer } from './sequencer.js'
export { default as reachability } from './reachability.js'
export type { Delivery, SequencerOptions } from './sequencer.js'
export type { HeartbeatOptions } from './heartbeat.js'

export interface EngineOptions {
  sessions?: SessionsOptions
  auth?: AuthOptions
  shutdown?: ShutdownOptions
  jsonLimits?: JsonLimitsOptions
  limits: LimitsOptions
  pendingConnections?: PendingConnectionsOptions
  heartbeat?: HeartbeatOptions
  /** The backend hooks (none without URLs). */
  proxy?: ProxyOptions
}

/**
 * The engine in one registration, in app.ts's order: the session registry,
 * tokens, shutdown (and HTTP/2 sessions' GOAWAY after it), JSON limits, connection and handshake limits, the
 * heartbeat, the backend hooks, the upgrade routes and the message rate. Needs `core` (config,
 * identity, status, metrics) and `http` (cors, websocket).
 */
export default fp<EngineOptions>(async function engine (app, opts) {
  await app.register(sessions, opts.sessions ?? {})
  await app.register(auth, opts.auth ?? {})
  await app.register(shutdown, opts.shutdown ?? {})
  await app.register(http2Sessions)
  await app.register(jsonLimits, opts.jsonLimits ?? {})
  await app.register(limits, opts.limits)
  await app.register(pendingConnections, opts.pendingConnections ?? {})
  await app.register(heartbeat, opts.heartbeat ?? {})
  await app.register(proxy, opts.proxy ?? {})
  await app.register(upgradeRoutes)
  await app.register(messageRate)
}, { name: 'engine', fastify: '5.x', dependencies: ['config', 'identity', 'status', 'metrics', 'tracing', 'cors', 'websocket'] })
