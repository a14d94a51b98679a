import { Type, type TObject, type TSchema } from '@sinclair/typebox'
import type { ErrorCode } from '../../protocol/errors.js'
import { ClientId, RequestId } from '../../protocol/schemas.js'

/**
 * The WebSocket protocol as an AsyncAPI 3 document. Client→server messages are
 * the schemas the dispatcher validates with (read from its registry, so the
 * document cannot drift from what is enforced); server→client messages are
 * declared here, and test/asyncapi.test.ts checks live traffic against them.
 */

const Open = { additionalProperties: true }
const Timestamp = Type.String({ format: 'date-time', description: 'ISO 8601 UTC with milliseconds' })
const Id = Type.Optional({ ...RequestId, description: 'the `id` of the request this answers' } as typeof RequestId)
const Room = Type.String({ description: 'room name' })
const RoomMessage = Type.Object({
  type: Type.Literal('room_message'),
  room: Room,
  offset: Type.Integer({ minimum: 1, description: 'per room, grows by 1 per message' }),
  messageId: Type.String(),
  from: Type.String({ description: 'client id of the sender (`server` for an HTTP publish without `from`)' }),
  data: Type.Unknown({ description: 'any JSON value, as published' }),
  timestamp: Timestamp
}, Open)

/** Every error code a WebSocket client can get, with what it means (a missing or unknown code fails to compile). */
export const ERROR_CODES: Record<ErrorCode, string> = {
  invalid_message: 'the frame is not JSON, not an object, or a field breaks its schema; the message names the field and the limit',
  unknown_type: '`type` names no registered message type; `knownTypes` lists them',
  not_in_room: '`publish`, `update`, `exec` or `leave` for a room the connection has not joined',
  room_limit: 'the connection is already in `limit` rooms (MAX_ROOMS_PER_CONNECTION)',
  rate_limited: 'more than WS_MESSAGES_PER_SECOND messages per second (burst 2x); sustained flooding closes with 1008',
  version_conflict: '`baseVersion` is not the room\'s version; `currentVersion` says which it is',
  forbidden: 'the token\'s `rooms` claim does not allow this room',
  code_execution_disabled: '`exec` on a server without ENABLE_CODE_EXECUTION',
  exec_timeout: 'the code ran longer than EXEC_TIMEOUT_MS',
  exec_failed: 'the code threw or ran out of memory (EXEC_MEMORY_MB)',
  state_too_large: 'the state after the patch would exceed ROOM_STATE_MAX_BYTES; `bytes` and `maxBytes` say by how much',
  unavailable: 'the store could not load or commit; nothing changed, retry later',
  internal_error: 'an unexpected server failure; nothing is known to have changed'
}

/** Messages the server sends, by message name (`type` is in each payload; `ack` has one shape per request). */
export const SERVER_MESSAGES: Record<string, { summary: string, payload: TObject }> = {
  welcome: {
    summary: 'First frame of every connection: who you are and the limits you can hit; queued direct messages follow',
    payload: Type.Object({
      type: Type.Literal('welcome'),
      clientId: Type.String({ description: 'the token\'s sub, the clientId query parameter, or a generated `anon-` id' }),
      connectionId: Type.String(),
      serverId: Type.String({ description: 'the instance that holds this connection' }),
      timestamp: Timestamp,
      heartbeatIntervalMs: Type.Integer({ description: 'server pings this often; silent for 2 intervals = terminated' }),
      limits: Type.Object({
        maxPayload: Type.Integer({ description: 'bytes per frame (WS_MAX_PAYLOAD); larger closes with 1009' }),
        messagesPerSecond: Type.Integer({ description: 'sustained frames per second (WS_MESSAGES_PER_SECOND)' }),
        messageBurst: Type.Integer({ description: 'frames in a burst (2x the rate)' }),
        maxRoomsPerConnection: Type.Integer({ description: 'MAX_ROOMS_PER_CONNECTION' }),
        roomHistorySize: Type.Integer({ description: 'messages kept per room (ROOM_HISTORY_SIZE)' }),
        roomStateMaxBytes: Type.Integer({ description: 'a room state\'s JSON size (ROOM_STATE_MAX_BYTES)' }),
        textMaxLength: Type.Integer({ description: 'characters of a direct message\'s `text`' }),
        roomNameMaxLength: Type.Integer(),
        roomNamePattern: Type.String(),
        clientIdMaxLength: Type.Integer(),
        clientIdPattern: Type.String(),
        execCodeMaxLength: Type.Integer({ description: 'characters of an `exec` message\'s `code`' }),
        requestIdMaxLength: Type.Integer({ description: 'characters of a string `id`' })
      }, Open)
    }, Open)
  },
  pong: { summary: 'Reply to ping', payload: Type.Object({ type: Type.Literal('pong'), timestamp: Timestamp, id: Id }, Open) },
  ackSend: {
    summary: 'Reply to send: committed; `delivered` connections reached, `queued` for an offline recipient',
    payload: Type.Object({ type: Type.Literal('ack'), messageId: Type.String(), delivered: Type.Integer({ minimum: 0 }), queued: Type.Boolean(), id: Id }, Open)
  },
  ackPublish: {
    summary: 'Reply to publish, after the commit (and after the sender\'s own room_message)',
    payload: Type.Object({ type: Type.Literal('ack'), room: Room, offset: Type.Integer({ minimum: 1 }), messageId: Type.String(), id: Id }, Open)
  },
  ackUpdate: {
    summary: 'Reply to update, after the commit',
    payload: Type.Object({ type: Type.Literal('ack'), room: Room, version: Type.Integer({ minimum: 1 }), id: Id }, Open)
  },
  ackExec: { summary: 'Reply to exec: accepted; members get exec_result', payload: Type.Object({ type: Type.Literal('ack'), room: Room, id: Id }, Open) },
  message: {
    summary: 'A direct message, to every connection of `to`',
    payload: Type.Object({ type: Type.Literal('message'), messageId: Type.String(), from: Type.String(), to: Type.String(), text: Type.String(), timestamp: Timestamp }, Open)
  },
  joined: {
    summary: 'Reply to join: a snapshot of the room and what was missed since `since`',
    payload: Type.Object({
      type: Type.Literal('joined'),
      room: Room,
      state: Type.Record(Type.String(), Type.Unknown(), { description: 'the room\'s JSON state' }),
      version: Type.Integer({ minimum: 0 }),
      offset: Type.Integer({ minimum: 0 }),
      members: Type.Array(Type.String(), { description: 'client ids, each once' }),
      missed: Type.Array(RoomMessage, { description: 'messages after `since`, oldest first' }),
      recovered: Type.Boolean({ description: 'true when `missed` is complete' }),
      id: Id
    }, Open)
  },
  left: { summary: 'Reply to leave', payload: Type.Object({ type: Type.Literal('left'), room: Room, id: Id }, Open) },
  presence: {
    summary: 'To the other members: a client\'s first connection joined, or its last one left',
    payload: Type.Object({ type: Type.Literal('presence'), room: Room, event: Type.Union([Type.Literal('join'), Type.Literal('leave')]), clientId: Type.String() }, Open)
  },
  room_message: { summary: 'A published message, to every member (sender included)', payload: RoomMessage },
  state: {
    summary: 'A state change, to every member: the patch as sent',
    payload: Type.Object({ type: Type.Literal('state'), room: Room, version: Type.Integer({ minimum: 1 }), patch: Type.Record(Type.String(), Type.Unknown()), from: Type.String() }, Open)
  },
  exec_result: {
    summary: 'The outcome of an exec, to every member',
    payload: Type.Object({
      type: Type.Literal('exec_result'),
      room: Room,
      from: Type.String(),
      ok: Type.Boolean(),
      result: Type.Unknown({ description: 'the completion value as JSON; null on failure' }),
      logs: Type.Array(Type.String(), { description: 'what console.log printed' }),
      error: Type.Union([Type.Null(), Type.Object({ code: Type.String(), message: Type.String() }, Open)]),
      durationMs: Type.Number({ minimum: 0 })
    }, Open)
  },
  error: {
    summary: 'A refused request; the connection stays open',
    payload: Type.Object({
      type: Type.Literal('error'),
      code: Type.Union(Object.keys(ERROR_CODES).map(c => Type.Literal(c)), { description: Object.entries(ERROR_CODES).map(([c, d]) => `${c}: ${d}`).join('\n') }),
      message: Type.String({ description: 'for people: names the field and the limit' }),
      id: Id
    }, Open)
  },
  server_shutdown: {
    summary: 'The server is stopping: reconnect after `reconnectAfterMs`; a close 1001 follows',
    payload: Type.Object({ type: Type.Literal('server_shutdown'), reason: Type.String(), reconnectAfterMs: Type.Integer({ minimum: 0 }), timestamp: Timestamp }, Open)
  }
}

/** The replies of the built-in client messages (an error may answer any of them). */
const REPLIES: Record<string, string[]> = {
  ping: ['pong'],
  send: ['ackSend'],
  join: ['joined'],
  leave: ['left'],
  publish: ['ackPublish'],
  update: ['ackUpdate'],
  exec: ['ackExec']
}

const SUMMARIES: Record<string, string> = {
  ping: 'Application-level ping; answered with pong',
  send: 'A direct message to every connection of client `to` (queued while it is offline)',
  join: 'Join a room; `since` (the last offset seen) recovers what was missed',
  leave: 'Leave a room',
  publish: 'Publish `data` to a room the connection has joined',
  update: 'Apply an RFC 7396 JSON Merge Patch to a room\'s state, optionally only at `baseVersion`',
  exec: 'Run JavaScript in the sandbox; every member gets exec_result (ENABLE_CODE_EXECUTION)'
}

/** The `type` values the server sends (for checks against docs/protocol.md). */
export function serverMessageTypes (): string[] {
  return [...new Set(Object.values(SERVER_MESSAGES).map(m => m.payload.properties.type.const as string))]
}

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
  for (const [name, m] of Object.entries(SERVER_MESSAGES)) {
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
    operations[`send_${name}`] = { action: 'send', channel: { $ref: '#/channels/ws' }, summary: SERVER_MESSAGES[name].summary, messages: [ref(name)] }
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
      }
    },
    channels: {
      ws: {
        address: '/ws',
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
      }
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
