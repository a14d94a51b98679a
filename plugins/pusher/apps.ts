import { readFileSync } from 'node:fs'
import { ConfigError } from './deps.js'

/** The webhook event names an endpoint may ask for (`event_types`). */
export const WEBHOOK_EVENTS = ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event', 'cache_miss'] as const

/** One webhook endpoint: where, with which extra headers, for which events and channels. */
export interface WebhookTarget {
  url: string
  /** Sent with every request to this URL (the signature headers and Content-Type are the server's). */
  headers: Record<string, string>
  /** The events this URL receives; null: every event. */
  eventTypes: ReadonlySet<string> | null
  /** Only events of channels whose name starts / ends with these. */
  channelPrefix?: string
  channelSuffix?: string
}

/** One Pusher app: its credentials, its limits and where its webhooks go. */
export interface PusherApp {
  id: string
  key: string
  secret: string
  /** Connections are accepted [true]; a disabled app's are refused with 4003 (its HTTP API still answers). */
  enabled: boolean
  /** Clients may send `client-*` events on private and presence channels [true]. */
  enableClientMessages: boolean
  /** Open Pusher connections this app accepts on this instance; past it a new one is closed with 4004 [1000]. */
  maxConnections: number
  /** `client-*` events one connection may send per second; more get `pusher:error` 4301 [10]. */
  maxClientEventsPerSecond: number
  /** Bytes of an event's `data` [10240] (Soketi: maxEventPayloadInKb). */
  maxEventPayloadBytes: number
  /** Members of one presence channel [100] (Soketi: maxPresenceMembersPerChannel). */
  maxPresenceMembers: number
  /** Bytes of a presence member's user_info, serialized [1024] (Soketi: maxPresenceMemberSizeInKb). */
  maxPresenceMemberBytes: number
  /** Characters of a channel name, prefix included [164, Pusher's limit]. */
  maxChannelNameLength: number
  /** Characters of an event name [200]. */
  maxEventNameLength: number
  /** Channels one HTTP trigger may name [100]. */
  maxEventChannelsAtOnce: number
  /** Events of one HTTP batch [10]. */
  maxEventBatchSize: number
  /** Bytes of an HTTP API request body [1048576]. */
  maxRequestBodyBytes: number
  /** Webhook endpoints; empty = no webhooks. */
  webhooks: WebhookTarget[]
  /** How long webhook events are gathered into one request per URL [250]; 0: one request per event. */
  webhookBatchMs: number
  /** Native room `<prefix><channel>` is the app's channel `<channel>` (bridge.ts); undefined: no bridge. */
  bridgeRoomPrefix?: string
  /** private- and presence- channels are bridged too [false]; encrypted ones never are. */
  bridgePrivate: boolean
  /** A connection must sign in (or subscribe to a private- or presence- channel) within `userAuthenticationTimeout`, or it is closed with 4009 [false]. */
  enableUserAuthentication: boolean
  /** Milliseconds a connection has to sign in when `enableUserAuthentication` is on [30000]. */
  userAuthenticationTimeout: number
}

const DEFAULTS = {
  enableClientMessages: true,
  maxConnections: 1000,
  maxClientEventsPerSecond: 10,
  maxEventPayloadBytes: 10240,
  maxPresenceMembers: 100,
  maxPresenceMemberBytes: 1024,
  maxChannelNameLength: 164,
  maxEventNameLength: 200,
  maxEventChannelsAtOnce: 100,
  maxEventBatchSize: 10,
  maxRequestBodyBytes: 1048576,
  webhookBatchMs: 250,
  userAuthenticationTimeout: 30000
}

export interface PusherAppsEnv {
  PUSHER_APP_ID?: string
  PUSHER_APP_KEY?: string
  PUSHER_APP_SECRET?: string
  PUSHER_WEBHOOK_URL?: string
  PUSHER_APPS_FILE?: string
  PUSHER_BRIDGE_ROOM_PREFIX?: string
  PUSHER_BRIDGE_PRIVATE?: boolean
}

function fail (where: string, field: string, what: string, got: unknown): never {
  throw new ConfigError(`Invalid configuration: ${where}: ${field} must be ${what} (got ${JSON.stringify(got) ?? 'nothing'})`)
}

const ID = /^[A-Za-z0-9_.-]{1,64}$/
const BRIDGE_PREFIX = /^[A-Za-z0-9_.:-]{1,64}$/

/**
 * The value of a field under its name or one of the names Soketi's app
 * managers accept for it (PascalCase, snake_case), so an apps file carries over.
 */
function pick (raw: Record<string, unknown>, field: string, aliases: string[] = []): { name: string, value: unknown } {
  for (const name of [field, ...aliases]) if (raw[name] !== undefined && raw[name] !== null) return { name, value: raw[name] }
  return { name: field, value: undefined }
}

/** Soketi's other spellings of each field (PascalCase for DynamoDB, snake_case for SQL). */
function spellings (field: string): string[] {
  return [field[0].toUpperCase() + field.slice(1), field.replace(/[A-Z]/g, c => `_${c.toLowerCase()}`)]
}

function positiveInt (where: string, raw: Record<string, unknown>, field: keyof typeof DEFAULTS, aliases: string[] = []): number {
  const found = pick(raw, field, [...aliases, ...spellings(field)])
  const value = found.value ?? DEFAULTS[field]
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) fail(where, found.name, 'an integer >= 1', value)
  return value
}

/**
 * A size in bytes, given in bytes under `field` or in kilobytes (1024 bytes,
 * fractions allowed) under Soketi's `kbField`.
 */
function bytes (where: string, raw: Record<string, unknown>, field: keyof typeof DEFAULTS, kbField: string): number {
  const kb = pick(raw, kbField, spellings(kbField))
  if (kb.value !== undefined && pick(raw, field, spellings(field)).value === undefined) {
    if (typeof kb.value !== 'number' || !(kb.value > 0) || !Number.isFinite(kb.value)) fail(where, kb.name, 'a number of kilobytes > 0', kb.value)
    return Math.max(1, Math.floor(kb.value * 1024))
  }
  return positiveInt(where, raw, field)
}

/** A limit Soketi writes -1 for when there is none (maxConnections, maxClientEventsPerSecond): -1 is no limit. */
function limitOrNone (where: string, raw: Record<string, unknown>, field: keyof typeof DEFAULTS): number {
  const found = pick(raw, field, spellings(field))
  if (found.value === -1) return Infinity
  const value = found.value ?? DEFAULTS[field]
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) fail(where, found.name, 'an integer >= 1, or -1 for no limit', value)
  return value
}

function flag (where: string, raw: Record<string, unknown>, field: string, fallback: boolean): boolean {
  const found = pick(raw, field, spellings(field))
  const value = found.value ?? fallback
  if (typeof value !== 'boolean') fail(where, found.name, 'true or false', value)
  return value
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/
/** Headers the server sets itself on every webhook request. */
const OWN_HEADERS = new Set(['content-type', 'content-length', 'x-pusher-key', 'x-pusher-signature', 'host'])

/** A webhook endpoint: a URL, or Soketi's object {url, headers, event_types, filter: {channel_name_starts_with, channel_name_ends_with}}. */
function parseWebhook (where: string, at: string, raw: unknown): WebhookTarget {
  const isUrl = (u: unknown): u is string => typeof u === 'string' && /^https?:\/\//.test(u) && URL.canParse(u)
  if (typeof raw === 'string') {
    if (!isUrl(raw)) fail(where, at, 'an http:// or https:// URL', raw)
    return { url: raw, headers: {}, eventTypes: null }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(where, at, 'a URL or an object {url, event_types, filter, headers}', raw)
  const w = raw as Record<string, unknown>
  if (w.lambda_function !== undefined || w.lambda !== undefined) fail(where, `${at}.lambda_function`, 'absent: AWS Lambda webhooks are not supported (give a url)', w.lambda_function ?? w.lambda)
  if (!isUrl(w.url)) fail(where, `${at}.url`, 'an http:// or https:// URL', w.url)
  const headers: Record<string, string> = {}
  if (w.headers !== undefined) {
    if (w.headers === null || typeof w.headers !== 'object' || Array.isArray(w.headers)) fail(where, `${at}.headers`, 'an object of header names to string values', w.headers)
    for (const [name, value] of Object.entries(w.headers as Record<string, unknown>)) {
      if (!HEADER_NAME.test(name)) fail(where, `${at}.headers`, 'header names of 1 to 128 token characters', name)
      if (OWN_HEADERS.has(name.toLowerCase())) fail(where, `${at}.headers.${name}`, 'absent: the server sets it (Content-Type, X-Pusher-Key, X-Pusher-Signature)', name)
      // the value itself is never echoed: headers often carry secrets
      if (typeof value !== 'string' || /[\r\n\0]/.test(value) || value.length > 4096) fail(where, `${at}.headers.${name}`, 'a string of at most 4096 characters without CR, LF or NUL', typeof value === 'string' ? '(value not shown)' : value)
      headers[name] = value
    }
  }
  let eventTypes: Set<string> | null = null
  const types = w.event_types ?? w.eventTypes
  if (types !== undefined) {
    if (!Array.isArray(types) || types.length === 0 || !types.every(e => (WEBHOOK_EVENTS as readonly unknown[]).includes(e))) fail(where, `${at}.event_types`, `a non-empty list of ${WEBHOOK_EVENTS.join(', ')}`, types)
    eventTypes = new Set(types as string[])
  }
  const out: WebhookTarget = { url: w.url, headers, eventTypes }
  if (w.filter !== undefined) {
    if (w.filter === null || typeof w.filter !== 'object' || Array.isArray(w.filter)) fail(where, `${at}.filter`, 'an object {channel_name_starts_with, channel_name_ends_with}', w.filter)
    const f = w.filter as Record<string, unknown>
    for (const [key, field] of [['channel_name_starts_with', 'channelPrefix'], ['channel_name_ends_with', 'channelSuffix']] as const) {
      const v = f[key]
      if (v === undefined) continue
      if (typeof v !== 'string' || v === '' || v.length > 200) fail(where, `${at}.filter.${key}`, 'a string of 1 to 200 characters', v)
      out[field] = v
    }
  }
  return out
}

function batchMs (where: string, raw: Record<string, unknown>): number {
  const found = pick(raw, 'webhookBatchMs', spellings('webhookBatchMs'))
  const value = found.value ?? DEFAULTS.webhookBatchMs
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) fail(where, found.name, 'an integer >= 0 (0: one request per event)', value)
  return value
}

/** One app from its raw description (an entry of PUSHER_APPS_FILE, or the three variables). */
export function parseApp (where: string, raw: Record<string, unknown>): PusherApp {
  for (const field of ['id', 'key', 'secret'] as const) {
    const value = raw[field]
    if (typeof value !== 'string' || !ID.test(value)) fail(where, field, 'a string of 1 to 64 letters, digits, _ . -', value)
  }
  const webhooks = pick(raw, 'webhooks', ['Webhooks']).value ?? []
  if (!Array.isArray(webhooks)) fail(where, 'webhooks', 'a list of URLs or of {url, event_types, filter, headers}', webhooks)
  const targets = webhooks.map((w, i) => parseWebhook(where, `webhooks[${i}]`, w))
  const prefix = raw.bridgeRoomPrefix
  if (prefix !== undefined && (typeof prefix !== 'string' || !BRIDGE_PREFIX.test(prefix))) {
    fail(where, 'bridgeRoomPrefix', 'a native room name prefix: 1 to 64 of A-Z a-z 0-9 _ . : -', prefix)
  }
  const bridgePrivate = raw.bridgePrivate ?? false
  if (typeof bridgePrivate !== 'boolean') fail(where, 'bridgePrivate', 'true or false', bridgePrivate)
  if (bridgePrivate && prefix === undefined) fail(where, 'bridgePrivate', 'false without a bridgeRoomPrefix', bridgePrivate)
  return {
    id: raw.id as string,
    key: raw.key as string,
    secret: raw.secret as string,
    enabled: flag(where, raw, 'enabled', true),
    enableClientMessages: flag(where, raw, 'enableClientMessages', DEFAULTS.enableClientMessages),
    maxConnections: limitOrNone(where, raw, 'maxConnections'),
    maxClientEventsPerSecond: limitOrNone(where, raw, 'maxClientEventsPerSecond'),
    maxEventPayloadBytes: bytes(where, raw, 'maxEventPayloadBytes', 'maxEventPayloadInKb'),
    maxPresenceMembers: positiveInt(where, raw, 'maxPresenceMembers', ['maxPresenceMembersPerChannel', 'MaxPresenceMembersPerChannel', 'max_presence_members_per_channel']),
    maxPresenceMemberBytes: bytes(where, raw, 'maxPresenceMemberBytes', 'maxPresenceMemberSizeInKb'),
    maxChannelNameLength: positiveInt(where, raw, 'maxChannelNameLength'),
    maxEventNameLength: positiveInt(where, raw, 'maxEventNameLength'),
    maxEventChannelsAtOnce: positiveInt(where, raw, 'maxEventChannelsAtOnce'),
    maxEventBatchSize: positiveInt(where, raw, 'maxEventBatchSize'),
    maxRequestBodyBytes: positiveInt(where, raw, 'maxRequestBodyBytes'),
    webhooks: targets,
    webhookBatchMs: batchMs(where, raw),
    ...(prefix === undefined ? {} : { bridgeRoomPrefix: prefix as string }),
    bridgePrivate,
    enableUserAuthentication: flag(where, raw, 'enableUserAuthentication', false),
    userAuthenticationTimeout: positiveInt(where, raw, 'userAuthenticationTimeout')
  }
}

/** The apps an environment enables: none without PUSHER_APP_* or PUSHER_APPS_FILE. */
export function loadApps (env: PusherAppsEnv): PusherApp[] {
  const apps: PusherApp[] = []
  const single = [env.PUSHER_APP_ID, env.PUSHER_APP_KEY, env.PUSHER_APP_SECRET]
  if (single.some(v => v !== undefined)) {
    if (single.some(v => v === undefined)) {
      throw new ConfigError('Invalid configuration: PUSHER_APP_ID, PUSHER_APP_KEY and PUSHER_APP_SECRET must be set together (one is missing)')
    }
    apps.push(parseApp('PUSHER_APP_*', {
      id: env.PUSHER_APP_ID,
      key: env.PUSHER_APP_KEY,
      secret: env.PUSHER_APP_SECRET,
      webhooks: env.PUSHER_WEBHOOK_URL === undefined ? [] : [env.PUSHER_WEBHOOK_URL],
      bridgeRoomPrefix: env.PUSHER_BRIDGE_ROOM_PREFIX,
      bridgePrivate: env.PUSHER_BRIDGE_PRIVATE ?? false
    }))
  } else if (env.PUSHER_WEBHOOK_URL !== undefined || env.PUSHER_BRIDGE_ROOM_PREFIX !== undefined || env.PUSHER_BRIDGE_PRIVATE === true) {
    throw new ConfigError(`Invalid configuration: ${env.PUSHER_WEBHOOK_URL !== undefined ? 'PUSHER_WEBHOOK_URL' : env.PUSHER_BRIDGE_ROOM_PREFIX !== undefined ? 'PUSHER_BRIDGE_ROOM_PREFIX' : 'PUSHER_BRIDGE_PRIVATE'} needs PUSHER_APP_ID, PUSHER_APP_KEY and PUSHER_APP_SECRET`)
  }
  if (env.PUSHER_APPS_FILE !== undefined) {
    let parsed: unknown
    try {
      parsed = JSON.parse(readFileSync(env.PUSHER_APPS_FILE, 'utf8'))
    } catch (err) {
      throw new ConfigError(`Invalid configuration: PUSHER_APPS_FILE ${env.PUSHER_APPS_FILE} cannot be read as JSON (${(err as Error).message})`)
    }
    const list = Array.isArray(parsed) ? parsed : (parsed as { apps?: unknown } | null)?.apps
    if (!Array.isArray(list)) fail('PUSHER_APPS_FILE', 'apps', 'a list of apps (or the file a JSON list)', list)
    list.forEach((raw, i) => {
      if (raw === null || typeof raw !== 'object') fail('PUSHER_APPS_FILE', `apps[${i}]`, 'an object', raw)
      apps.push(parseApp(`PUSHER_APPS_FILE apps[${i}]`, raw as Record<string, unknown>))
    })
  }
  const ids = new Set<string>()
  const keys = new Set<string>()
  for (const app of apps) {
    if (ids.has(app.id)) throw new ConfigError(`Invalid configuration: Pusher app id ${app.id} is defined twice`)
    if (keys.has(app.key)) throw new ConfigError(`Invalid configuration: Pusher app key ${app.key} is defined twice`)
    ids.add(app.id)
    keys.add(app.key)
  }
  // a native room belongs to at most one app's bridge
  const bridged = apps.filter(a => a.bridgeRoomPrefix !== undefined)
  for (const a of bridged) {
    for (const b of bridged) {
      if (a !== b && a.bridgeRoomPrefix!.startsWith(b.bridgeRoomPrefix!)) {
        throw new ConfigError(`Invalid configuration: Pusher apps ${a.id} and ${b.id}: bridgeRoomPrefix ${JSON.stringify(a.bridgeRoomPrefix)} starts with ${JSON.stringify(b.bridgeRoomPrefix)}, so a native room would map to both apps' channels`)
      }
    }
  }
  return apps
}
