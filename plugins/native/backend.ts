import fp from 'fastify-plugin'
import { RpcFields } from '../../protocol/client-frames.js'
import { RPC_DATA_MAX_BYTES } from '../../protocol/limits.js'
import { WsError } from '../../protocol/errors.js'
import { proxyError } from '../engine/proxy.js'

/**
 * The native protocol's part of the backend hooks (plugins/engine/proxy.ts):
 * the connect hook's `data` in `welcome`, and the `rpc` frame, answered
 * `rpc_result` with the backend's `data` (PROXY_RPC_URL). Joins and publishes
 * are hooked in the room registry, for every door.
 */
export default fp(async function nativeBackend (app) {
  const proxy = app.proxy
  app.dispatcher.addWelcomePart(conn => {
    const grant = proxy.sessionGrant(conn)
    return grant?.data === undefined ? {} : { data: grant.data }
  })

  app.dispatcher.register('rpc', RpcFields, async (conn, msg) => {
    if (!proxy.has('rpc')) throw new WsError('unavailable', 'rpc: this server has no RPC backend (PROXY_RPC_URL is unset)', { hook: 'rpc', reason: 'not_configured' })
    const bytes = msg.data === undefined ? 0 : Buffer.byteLength(JSON.stringify(msg.data))
    if (bytes > RPC_DATA_MAX_BYTES) throw new WsError('invalid_message', `data: must be at most ${RPC_DATA_MAX_BYTES} bytes as JSON, got ${bytes}`, { limit: RPC_DATA_MAX_BYTES })
    const decision = await proxy.client.call('rpc', { clientId: conn.clientId, connectionId: conn.id, protocol: conn.protocol.name }, { method: msg.method, data: msg.data ?? null })
    if (!decision.allowed) throw proxyError('rpc', decision, `rpc ${msg.method}`)
    return { type: 'rpc_result', data: decision.answer.data ?? null }
  })
}, { name: 'native-backend', fastify: '5.x', dependencies: ['dispatcher', 'proxy'] })
