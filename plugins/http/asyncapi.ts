import { Type, type TObject, type TSchema } from '@sinclair/typebox'
import { ClientId } from '../../protocol/schemas.js'
import { SERVER_FRAMES } from '../../protocol/server-frames.js'

export { serverMessageTypes } from '../../protocol/server-frames.js'

/**
 * The WebSocket protocol as an AsyncAPI 3 document. Client→server messages are
 * the schemas the dispatcher validates with (read from its registry, so the
 * document cannot drift from what is enforced); server→client messages are
 * protocol/server-frames.ts, and test/asyncapi.test.ts checks live traffic against them.
 */

/** The replies of the built-in client messages (an error may answer any of them). */
const REPLIES: Record<string, string[]> = {
  ping: ['pong'],
  send: ['ackSend'],
  join: ['joined'],
  leave: ['left'],
  publish: ['ackPublish'],
  update: ['ackUpdate'],
  exec: ['ackExec'],
  refresh: ['ackRefresh'],
  rpc: ['rpc_result']
}

const SUMMARIES: Record<string, string> = {
  ping: 'Application-level ping; answered with pong',
  send: 'A direct message to every connection of client `to` (queued while it is offline)',
  join: 'Join a room; `since` (the last offset seen) recovers what was missed',
  leave: 'Leave a room',
  publish: 'Publish `data` to a room the connection has joined',
  update: 'Apply an RFC 7396 JSON Merge Patch to a room\'s state, optionally only at `baseVersion`',
  exec: 'Run JavaScript in the sandbox; every member gets exec_result (ENABLE_CODE_EXECUTION)',
  rpc: 'Call the application backend (PROXY_RPC_URL) with `method` and `data`; answered rpc_result with its `data`'
}

/** The last event of a stream the server ends (token expiry, slow consumer, flooding). */
const StreamClose = Type.Object({
  type: Type.Literal('close'),
  reason: Type.String({ description: 'token_expired, slow_consumer or flood' }),
  code: Type.Integer({ description: 'the close code /ws would use (1008, 1013)' }),
  message: Type.String()
}, { additionalProperties: true })

/** A TypeBox schema as plain JSON (no symbol keys). */
const plain = (schema: TSchema): Record<string, unknown> => JSON.parse(JSON.stringify(schema))

export interface AsyncApiInput {
  /** The dispatcher's registry: client message type → the schema it is validated with. */
  clientMessages: Map<string, TObject>
  version: string
  /** host:port of the server entry. */
  host: string
}

/** The AsyncAPI 3.0 document of the WebSocket protocol at /ws. */
export function asyncApiDocument ({ clientMessages, version, host }: AsyncApiInput) {
  const ref = (name: string) => ({ $ref: `#/channels/ws/messages/${name}` })
  const messages: Record<string, unknown> = {}
  const operations: Record<string, unknown> = {}
  for (const [type, schema] of clientMessages) {
    messages[type] = { name: type, title: type, summary: SUMMARIES[type] ?? `the ${type} message`, payload: plain(schema) }
  }
  for (const [name, m] of Object.entries(SERVER_FRAMES)) {
    messages[name] = { name, title: m.payload.properties.type.const, summary: m.summary, payload: plain(m.payload) }
  }
  for (const type of clientMessages.keys()) {
    operations[`receive_${type}`] = {
      action: 'receive',
      channel: { $ref: '#/channels/ws' },
      summary: SUMMARIES[type] ?? `the ${type} message`,
      messages: [ref(type)],
      reply: { channel: { $ref: '#/channels/ws' }, messages: [...(REPLIES[type] ?? []), 'error'].map(ref) }
    }
  }
  const pushed = ['welcome', 'message', 'presence', 'room_message', 'state', 'exec_result', 'server_shutdown']
  for (const name of pushed) {
    operations[`send_${name}`] = { action: 'send', channel: { $ref: '#/channels/ws' }, summary: SERVER_FRAMES[name].summary, messages: [ref(name)] }
  }
  // the receive-only streams (/sse, /stream): each event is a /ws frame, named by its type
  const streamed = ['welcome', 'message', 'joined', 'presence', 'room_message', 'state', 'history_cleared', 'exec_result', 'token_expiring', 'server_shutdown', 'disconnected', 'error']
  const streamChannel = (address: string, title: string, description: string) => {
    const channelMessages: Record<string, unknown> = {}
    for (const name of streamed) channelMessages[name] = ref(name)
    channelMessages.reset = { name: 'reset', title: 'reset', summary: 'Instead of `joined`: the resume position in this room cannot be continued (another epoch, or messages no longer kept); the data is the `joined` frame with `recovered: false`', payload: plain(SERVER_FRAMES.joined.payload) }
    channelMessages.close = { name: 'close', title: 'close', summary: 'The server ends the stream: `reason` token_expired, slow_consumer or flood, with the `code` /ws would close with', payload: plain(StreamClose) }
    return { address, title, description, servers: [{ $ref: '#/servers/http' }], messages: channelMessages }
  }
  const channelsOfStreams = {
    sse: streamChannel('/sse', 'Server-Sent Events', 'GET /sse?rooms=a,b (text/event-stream). Each event: `id` (the stream\'s position in every listed room, `room:epoch:offset` entries; send it back as Last-Event-ID or ?lastEventId= to resume exactly after it), `event` (the frame type; `error` is named `stream_error`), `data` (the /ws frame\'s JSON). Comment lines are keepalives. Refused before the stream with the upgrade\'s HTTP errors (400 naming the field, 401, 403, 429/503).'),
    stream: streamChannel('/stream', 'HTTP streaming (NDJSON)', 'GET /stream?rooms=a,b: the same events as /sse, one `{"id","event","data"}` JSON object a line over a chunked response; empty lines are keepalives; resumed with ?lastEventId=.')
  }
  for (const channel of Object.keys(channelsOfStreams)) {
    for (const name of [...streamed, 'reset', 'close']) {
      operations[`${channel}_${name}`] = { action: 'send', channel: { $ref: `#/channels/${channel}` }, messages: [{ $ref: `#/channels/${channel}/messages/${name}` }] }
    }
  }
  return {
    asyncapi: '3.0.0',
    info: {
      title: 'Switchboard WebSocket protocol',
      version,
      description: 'Text frames, one JSON object each, with a `type`. A request may carry `id` (a string or a number); ' +
        'its reply (or error) carries the same `id`. The first frame is always `welcome`. A bad message gets an `error` ' +
        'and never closes the connection, except sustained flooding (close 1008) and frames over `limits.maxPayload` (close 1009). ' +
        'The HTTP API is described by the OpenAPI document at /docs/json.'
    },
    defaultContentType: 'application/json',
    servers: {
      switchboard: {
        host,
        protocol: 'ws',
        pathname: '/ws',
        description: 'This instance. Use wss:// behind a TLS proxy.',
        security: [{ $ref: '#/components/securitySchemes/bearer' }, { $ref: '#/components/securitySchemes/queryToken' }]
      },
      http: {
        host,
        protocol: 'http',
        description: 'This instance over plain HTTP: the receive-only streams /sse and /stream (writes go to the HTTP API). Use https:// behind a TLS proxy.',
        security: [{ $ref: '#/components/securitySchemes/bearer' }, { $ref: '#/components/securitySchemes/queryToken' }]
      }
    },
    channels: {
      ws: {
        address: '/ws',
        servers: [{ $ref: '#/servers/switchboard' }],
        title: 'The WebSocket connection',
        description: 'Every message type travels on the one connection. Upgrade refusals (before 101): 403 origin, 401 token, ' +
          '503 or 429 connection_limit_exceeded, 503 shutting down, 400 for a bad clientId.',
        messages,
        bindings: {
          ws: {
            method: 'GET',
            query: {
              type: 'object',
              properties: {
                clientId: { ...plain(ClientId), description: 'open mode: the client id to use (absent: a generated `anon-` id)' },
                token: { type: 'string', description: 'auth mode: the JWT, when no Authorization header can be sent' }
              }
            },
            bindingVersion: '0.1.0'
          }
        }
      },
      ...channelsOfStreams
    },
    operations,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'Authorization header of the upgrade (auth mode only)' },
        queryToken: { type: 'httpApiKey', name: 'token', in: 'query', description: 'the JWT as ?token= (auth mode only)' }
      }
    }
  }
}
