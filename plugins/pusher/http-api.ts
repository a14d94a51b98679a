import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { isPresence, USER_CHANNEL_PREFIX } from './channels/registry.js'
import type { AppRuntime } from './runtime.js'
import { verifyRequest } from './signatures.js'
import { MAX_USER_ID_LENGTH, SOCKET_ID } from './ws-protocol.js'
import { errorBody } from './deps.js'

/** Channels the HTTP API may name: Pusher's set, plus the leading # of #server-to-user-<id>. */
const API_CHANNEL = /^#?[-a-zA-Z0-9_=@,.;]+$/
/** #server-to-user-<id>: bounded by the user id's length, not by maxChannelNameLength. */
const USER_CHANNEL_MAX_LENGTH = USER_CHANNEL_PREFIX.length + MAX_USER_ID_LENGTH

export interface HttpApiOptions {
  byId: Map<string, AppRuntime>
  /** Counted per event triggered (metrics). */
  triggered: (n: number) => void
}

const STATUS_TEXT: Record<number, [string, string]> = {
  400: ['Bad Request', 'invalid_message'],
  401: ['Unauthorized', 'unauthorized'],
  403: ['Forbidden', 'forbidden'],
  404: ['Not Found', 'not_found'],
  413: ['Payload Too Large', 'payload_too_large'],
  503: ['Service Unavailable', 'unavailable']
}

class ApiError extends Error {
  constructor (readonly status: number, message: string) {
    super(message)
  }
}

function send (reply: FastifyReply, status: number, message: string) {
  const [, code] = STATUS_TEXT[status] ?? ['Error', 'invalid_message']
  return reply.code(status).send(errorBody(status, code, message))
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The Pusher app a signed HTTP API request was verified for. */
    pusherApp?: AppRuntime
  }
}

interface EventInput { name: string, data: string, channels: string[], socketId?: string, info: Set<string> }

function parseInfo (value: unknown): Set<string> {
  return new Set(typeof value === 'string' && value !== '' ? value.split(',').map(s => s.trim()) : [])
}

/** One event of `events` or of a batch, checked field by field against the app's limits. */
function parseEvent (raw: unknown, where: string, rt: AppRuntime): EventInput {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ApiError(400, `${where}: must be a JSON object`)
  const e = raw as Record<string, unknown>
  const { app } = rt
  if (typeof e.name !== 'string' || e.name === '' || e.name.length > app.maxEventNameLength) throw new ApiError(400, `${where}name: must be a string of 1 to ${app.maxEventNameLength} characters (maxEventNameLength)`)
  if (e.name.startsWith('pusher:') || e.name.startsWith('pusher_internal:')) throw new ApiError(400, `${where}name: must not start with pusher: or pusher_internal: (reserved)`)
  if (typeof e.data !== 'string') throw new ApiError(400, `${where}data: must be a string (the SDKs JSON-encode objects)`)
  if (Buffer.byteLength(e.data) > app.maxEventPayloadBytes) throw new ApiError(413, `${where}data: at most ${app.maxEventPayloadBytes} bytes (maxEventPayloadBytes; got ${Buffer.byteLength(e.data)})`)
  const channels = e.channels ?? (e.channel === undefined ? undefined : [e.channel])
  if (!Array.isArray(channels) || channels.length === 0) throw new ApiError(400, `${where}channels: must be a non-empty list of channel names (or channel: one name)`)
  if (channels.length > app.maxEventChannelsAtOnce) throw new ApiError(400, `${where}channels: at most ${app.maxEventChannelsAtOnce} channels per event (maxEventChannelsAtOnce; got ${channels.length})`)
  channels.forEach((c, i) => {
    if (typeof c !== 'string' || !API_CHANNEL.test(c)) throw new ApiError(400, `${where}channels[${i}]: must be 1 to ${app.maxChannelNameLength} characters of A-Z a-z 0-9 _ - = @ , . ; (a leading # only for #server-to-user-)`)
    const max = c.startsWith(USER_CHANNEL_PREFIX) ? USER_CHANNEL_MAX_LENGTH : app.maxChannelNameLength
    if (c.length > max) throw new ApiError(400, `${where}channels[${i}]: the channel name is longer than the allowed ${max} characters (${c.startsWith(USER_CHANNEL_PREFIX) ? 'a user id is at most ' + MAX_USER_ID_LENGTH : 'maxChannelNameLength'}; got ${c.length})`)
  })
  if (e.socket_id !== undefined && (typeof e.socket_id !== 'string' || !SOCKET_ID.test(e.socket_id))) throw new ApiError(400, `${where}socket_id: must look like 1234.5678`)
  return { name: e.name, data: e.data, channels: channels as string[], socketId: e.socket_id as string | undefined, info: parseInfo(e.info) }
}

function parseBody (request: FastifyRequest): unknown {
  const body = request.body
  if (typeof body !== 'string' || body === '') throw new ApiError(400, 'body: must be a JSON object')
  try {
    return JSON.parse(body)
  } catch {
    throw new ApiError(400, 'body: must be valid JSON')
  }
}

/**
 * The Pusher HTTP API, in a context of its own: its JSON bodies stay raw
 * strings (body_md5 is over the bytes sent), and every route verifies the
 * request's signature for the app named by :appId before it runs.
 */
export default async function pusherHttpApi (scope: FastifyInstance, opts: HttpApiOptions) {
  // bodies up to the largest app's maxRequestBodyBytes are read; each app's own limit is checked before its signature
  const bodyLimit = Math.max(...[...opts.byId.values()].map(rt => rt.app.maxRequestBodyBytes))
  scope.removeContentTypeParser('application/json')
  scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => done(null, body))

  scope.addHook('preHandler', async (request, reply) => {
    const { appId } = request.params as { appId: string }
    const rt = opts.byId.get(appId)
    if (!rt) return send(reply, 404, `Unknown app id ${appId.slice(0, 64)}`)
    const size = typeof request.body === 'string' ? Buffer.byteLength(request.body) : 0
    if (size > rt.app.maxRequestBodyBytes) return send(reply, 413, `body: at most ${rt.app.maxRequestBodyBytes} bytes (maxRequestBodyBytes; got ${size})`)
    const query: Record<string, string> = {}
    for (const [k, v] of Object.entries(request.query as Record<string, unknown>)) {
      if (typeof v === 'string') query[k] = v
      else return send(reply, 400, `query: ${k} must be given once`)
    }
    const check = verifyRequest({
      method: request.method,
      path: request.raw.url!.split('?')[0],
      query,
      body: typeof request.body === 'string' ? request.body : '',
      key: rt.app.key,
      secret: rt.app.secret
    })
    if (!check.ok) {
      request.log.info({ event: 'pusher.api_refused', appId: rt.app.id, status: check.status, reason: check.message.split(':')[0] }, 'a Pusher HTTP API request was refused')
      return send(reply, check.status, check.message)
    }
    request.pusherApp = rt
  })

  scope.setErrorHandler((err: Error & { statusCode?: number }, _request, reply) => {
    if (err instanceof ApiError) return send(reply, err.status, err.message)
    // the other instances cannot be reached (Redis is down): nothing is answered 200 that did not reach them
    if (err.statusCode === 503) return send(reply, 503, `${err.message}`)
    if (err.statusCode === 413) return send(reply, 413, `body: at most ${bodyLimit} bytes (maxRequestBodyBytes)`)
    throw err
  })

  const hidden = { hide: true }

  scope.post('/apps/:appId/events', { schema: hidden, bodyLimit }, async request => {
    const rt = request.pusherApp!
    const e = parseEvent(parseBody(request), '', rt)
    // answered once every channel's event reached the other instances: 503 when they cannot be reached
    await Promise.all(e.channels.map(c => rt.trigger(c, e.name, e.data, e.socketId)))
    opts.triggered(e.channels.length)
    if (e.info.size === 0) return {}
    return { channels: Object.fromEntries(await Promise.all(e.channels.map(async c => [c, await rt.info(c, e.info)]))) }
  })

  scope.post('/apps/:appId/batch_events', { schema: hidden, bodyLimit }, async request => {
    const rt = request.pusherApp!
    const body = parseBody(request) as { batch?: unknown }
    const batch = body?.batch
    if (!Array.isArray(batch) || batch.length === 0) throw new ApiError(400, 'batch: must be a non-empty list of events')
    if (batch.length > rt.app.maxEventBatchSize) throw new ApiError(400, `batch: at most ${rt.app.maxEventBatchSize} events (maxEventBatchSize; got ${batch.length})`)
    // every event is checked before any is sent: a bad batch sends nothing
    const events = batch.map((raw, i) => parseEvent(raw, `batch[${i}].`, rt))
    let n = 0
    const sent: Array<Promise<number>> = []
    for (const e of events) {
      for (const c of e.channels) sent.push(rt.trigger(c, e.name, e.data, e.socketId))
      n += e.channels.length
    }
    await Promise.all(sent)
    opts.triggered(n)
    if (events.every(e => e.info.size === 0)) return {}
    return { batch: await Promise.all(events.map(e => (e.info.size === 0 ? {} : rt.info(e.channels[0], e.info)))) }
  })

  scope.get('/apps/:appId/channels', { schema: hidden }, async request => {
    const rt = request.pusherApp!
    const q = request.query as { filter_by_prefix?: string, info?: string }
    const prefix = q.filter_by_prefix ?? ''
    const info = parseInfo(q.info)
    if (info.has('user_count') && !prefix.startsWith('presence-')) throw new ApiError(400, 'info: user_count is only available with filter_by_prefix=presence-')
    const channels: Record<string, object> = {}
    for (const name of await rt.channelNames()) {
      if (name.startsWith(USER_CHANNEL_PREFIX) || !name.startsWith(prefix)) continue
      channels[name] = await rt.info(name, info)
    }
    return { channels }
  })

  scope.get('/apps/:appId/channels/:channel', { schema: hidden }, async request => {
    const rt = request.pusherApp!
    const { channel } = request.params as { channel: string }
    const info = parseInfo((request.query as { info?: string }).info)
    if (info.has('user_count') && !isPresence(channel)) throw new ApiError(400, 'info: user_count is only available for presence- channels')
    const { subscription_count: subscriptions, ...rest } = await rt.info(channel, new Set([...info, 'subscription_count']))
    const out: Record<string, unknown> = { occupied: subscriptions! > 0, ...rest, ...(info.has('subscription_count') ? { subscription_count: subscriptions } : {}) }
    if (info.has('cache')) {
      const last = await rt.cached(channel)
      if (last) out.cache = { event: last.event, data: last.data }
    }
    return out
  })

  scope.get('/apps/:appId/channels/:channel/users', { schema: hidden }, async request => {
    const rt = request.pusherApp!
    const { channel } = request.params as { channel: string }
    if (!isPresence(channel)) throw new ApiError(400, 'channel: users are only listed for presence- channels')
    return { users: (await rt.members(channel)).map(m => ({ id: m.userId })) }
  })

  scope.post('/apps/:appId/users/:userId/terminate_connections', { schema: hidden, bodyLimit }, async request => {
    const rt = request.pusherApp!
    const { userId } = request.params as { userId: string }
    await rt.terminateEverywhere(userId)
    return {}
  })
}
