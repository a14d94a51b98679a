import fp from 'fastify-plugin'
import { randomBytes, randomUUID } from 'node:crypto'
import { Agent as HttpAgent, request as httpRequest } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import { context, propagation, SpanKind, SpanStatusCode, trace, type Tracer } from '@opentelemetry/api'
import { signWebhook, webhookKey } from '../core/webhook-signature.js'
import { errorBody, parseJson } from '../core/errors.js'
import { jsonTextDepth, DEFAULT_JSON_MAX_DEPTH } from './json-limits.js'
import { ClientId, RoomName } from '../../protocol/schemas.js'
import type { Session } from './sessions.js'
import { WsError } from '../../protocol/errors.js'

/**
 * Proxy hooks: JSON POSTs from this server to the application's backend, which
 * decides (connect at the upgrade, join, publish, rpc). Written once here; the
 * upgrade helper, the room registry and the native dispatcher call it for every
 * door where a hook applies (docs/integration.md, "Proxy hooks").
 */

export const PROXY_HOOKS = ['connect', 'join', 'publish', 'rpc'] as const
export type ProxyHook = typeof PROXY_HOOKS[number]
/** What a hook's failure (backend down, timeout, bad answer) decides: refuse, or go on as if it allowed. */
export type FailurePolicy = 'deny' | 'allow'

export interface ProxyOptions {
  /** The backend URL of each hook; a hook without one is not called. */
  urls?: Partial<Record<ProxyHook, string>>
  /** Per-request timeout, the answer's body included [3000]. */
  timeoutMs?: number
  /** Standard Webhooks secret (`whsec_` + base64 of 24-64 bytes) signing every request; required with any URL. */
  secret?: string
  /** Per hook, what a failure decides [connect, join, publish: deny]; rpc always answers `unavailable`. */
  onFailure?: Partial<Record<Exclude<ProxyHook, 'rpc'>, FailurePolicy>>
  /** Largest answer body in bytes; a bigger one is a failure [65536]. */
  maxResponseBytes?: number
  /** Deepest nesting of the answer's JSON; deeper is a failure [JSON_MAX_DEPTH, 64]. */
  maxDepth?: number
}

/** Who asks: every request body carries it. */
export interface ProxyCaller {
  clientId: string
  /** null for the HTTP API, which has no connection. */
  connectionId: string | null
  /** The door: `switchboard` (/ws), `http`, `pusher`, `y-websocket`, `hocuspocus`. */
  protocol: string
}

/** How one call ended, as the latency histogram and the logs label it. */
export type ProxyOutcome = 'allowed' | 'denied' | 'timeout' | 'unreachable' | 'http_error' | 'invalid'

/** The backend allowed (or failed under the `allow` policy): its answer's fields. */
export interface ProxyAllowed<A> { allowed: true, answer: A, failure?: ProxyFailure }
/** The backend refused (or failed under the `deny` policy; rpc always). */
export interface ProxyRefused { allowed: false, code: string, message: string, failure?: ProxyFailure }
export type ProxyDecision<A> = ProxyAllowed<A> | ProxyRefused
export interface ProxyFailure { outcome: Exclude<ProxyOutcome, 'allowed' | 'denied'>, reason: string, status?: number }

/** A backend's code for a refusal: a short word. */
const Code = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' })
const Message = Type.String({ maxLength: 512 })
const Refusal = Type.Object({ allow: Type.Literal(false), code: Type.Optional(Code), message: Type.Optional(Message) })
/** Rooms the connect hook may join a connection to (at most the default MAX_ROOMS_PER_CONNECTION). */
export const CONNECT_ROOMS_MAX = 50

/** The answers each hook accepts: `allow: true` with its fields, or `allow: false` with an optional code and message. */
const ANSWERS = {
  connect: Type.Union([Type.Object({
    allow: Type.Literal(true),
    clientId: Type.Optional(ClientId),
    rooms: Type.Optional(Type.Array(RoomName, { maxItems: CONNECT_ROOMS_MAX })),
    data: Type.Optional(Type.Unknown())
  }), Refusal]),
  join: Type.Union([Type.Object({ allow: Type.Literal(true), data: Type.Optional(Type.Unknown()) }), Refusal]),
  publish: Type.Union([Type.Object({ allow: Type.Literal(true), data: Type.Optional(Type.Unknown()) }), Refusal]),
  rpc: Type.Union([Type.Object({ allow: Type.Literal(true), data: Type.Optional(Type.Unknown()) }), Refusal])
} satisfies Record<ProxyHook, TSchema>

type Allowed<H extends ProxyHook> = Extract<Static<typeof ANSWERS[H]>, { allow: true }>
export type ConnectAnswer = Allowed<'connect'>
export type JoinAnswer = Allowed<'join'>
export type PublishAnswer = Allowed<'publish'>
export type RpcAnswer = Allowed<'rpc'>

const CHECKS: { [H in ProxyHook]: TypeCheck<typeof ANSWERS[H]> } = {
  connect: TypeCompiler.Compile(ANSWERS.connect),
  join: TypeCompiler.Compile(ANSWERS.join),
  publish: TypeCompiler.Compile(ANSWERS.publish),
  rpc: TypeCompiler.Compile(ANSWERS.rpc)
}

/** The variable naming each hook's URL, for messages. */
export const PROXY_URL_VARIABLE: Record<ProxyHook, string> = {
  connect: 'PROXY_CONNECT_URL',
  join: 'PROXY_JOIN_URL',
  publish: 'PROXY_PUBLISH_URL',
  rpc: 'PROXY_RPC_URL'
}

/** A URL as logs and /api/status show it: no credentials, no query. */
export function shownUrl (url: string): string {
  const u = new URL(url)
  return `${u.origin}${u.pathname}`
}

class Failed extends Error {
  constructor (readonly outcome: ProxyFailure['outcome'], message: string, readonly status?: number) {
    super(message)
  }
}

interface HookStats { calls: number, denied: number, failures: number }

export interface ProxyClientDeps {
  log: FastifyBaseLogger
  /** Told every call's outcome and duration (the latency histogram). */
  observe?: (hook: ProxyHook, outcome: ProxyOutcome, seconds: number) => void
  /** Spans of the calls, whose context goes out as `traceparent`; without one a fresh unsampled traceparent is sent. */
  tracer?: Tracer
}

/**
 * The backend calls. Each is one signed POST (Standard Webhooks headers
 * `webhook-id`, `webhook-timestamp`, `webhook-signature` over the body, and a
 * W3C `traceparent`), bounded by `timeoutMs` and `maxResponseBytes`; the
 * answer is validated against the hook's schema. A failure of any kind is
 * logged (`proxy.failed`) and decided by the hook's policy; it never throws.
 */
export class ProxyClient {
  readonly timeoutMs: number
  readonly maxResponseBytes: number
  private readonly maxDepth: number
  private readonly key: Buffer | undefined
  private readonly urls: Partial<Record<ProxyHook, string>>
  private readonly policies: Record<Exclude<ProxyHook, 'rpc'>, FailurePolicy>
  private readonly stats = new Map<ProxyHook, HookStats>()
  /** Connections to the backend kept open between calls (at most 256 per backend host at once; more wait their turn, within the timeout). */
  private readonly agents = { http: new HttpAgent({ keepAlive: true, maxSockets: 256 }), https: new HttpsAgent({ keepAlive: true, maxSockets: 256 }) }

  constructor (opts: ProxyOptions, private readonly deps: ProxyClientDeps) {
    this.urls = opts.urls ?? {}
    this.timeoutMs = opts.timeoutMs ?? 3000
    this.maxResponseBytes = opts.maxResponseBytes ?? 65536
    this.maxDepth = opts.maxDepth ?? DEFAULT_JSON_MAX_DEPTH
    this.policies = { connect: 'deny', join: 'deny', publish: 'deny', ...opts.onFailure }
    const configured = PROXY_HOOKS.filter(h => this.urls[h] !== undefined)
    if (configured.length > 0 && opts.secret === undefined) throw new Error(`${PROXY_URL_VARIABLE[configured[0]]} needs a secret to sign the requests`)
    this.key = opts.secret === undefined ? undefined : webhookKey(opts.secret)
    for (const hook of configured) this.stats.set(hook, { calls: 0, denied: 0, failures: 0 })
  }

  /** Whether the hook has a URL (an unconfigured hook allows everything and costs nothing). */
  has (hook: ProxyHook): boolean {
    return this.urls[hook] !== undefined
  }

  policyOf (hook: Exclude<ProxyHook, 'rpc'>): FailurePolicy {
    return this.policies[hook]
  }

  /** What /api/status shows: each configured hook's URL (without credentials), policy and counts. */
  status (): Record<string, unknown> {
    const hooks: Record<string, unknown> = {}
    for (const hook of PROXY_HOOKS) {
      const url = this.urls[hook]
      if (url === undefined) continue
      hooks[hook] = { url: shownUrl(url), onFailure: hook === 'rpc' ? 'error' : this.policies[hook], ...this.stats.get(hook) }
    }
    return { enabled: Object.keys(hooks).length > 0, timeoutMs: this.timeoutMs, maxResponseBytes: this.maxResponseBytes, hooks }
  }

  /**
   * Asks the backend. `fields` are the hook's own (room, data, method,
   * idempotencyKey, ...), sent with the hook name, the caller and a timestamp.
   * Call only for a configured hook.
   */
  async call<H extends ProxyHook> (hook: H, caller: ProxyCaller, fields: Record<string, unknown>): Promise<ProxyDecision<Allowed<H>>> {
    const url = this.urls[hook] as string
    const stats = this.stats.get(hook) as HookStats
    stats.calls++
    const started = performance.now()
    const span = this.deps.tracer?.startSpan(`proxy ${hook}`, { kind: SpanKind.CLIENT, attributes: { 'switchboard.proxy.hook': hook, 'http.request.method': 'POST', 'url.full': shownUrl(url) } })
    const body = JSON.stringify({ hook, ...caller, ...fields, timestamp: new Date().toISOString() })
    const id = `msg_${randomUUID()}`
    const timestampS = Math.floor(Date.now() / 1000)
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(timestampS),
      'webhook-signature': signWebhook(this.key as Buffer, id, timestampS, body)
    }
    if (span !== undefined) propagation.inject(trace.setSpan(context.active(), span), headers)
    // tracing off (or no propagator installed): a fresh, unsampled trace context, so the backend's logs and ours name one trace
    headers.traceparent ??= `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-00`
    const traceId = headers.traceparent.split('-')[1]
    let outcome: ProxyOutcome
    let decision: ProxyDecision<Allowed<H>>
    try {
      const answer = await this.post(hook, url, headers, body)
      if (answer.allow) {
        outcome = 'allowed'
        decision = { allowed: true, answer: answer as Allowed<H> }
      } else {
        outcome = 'denied'
        stats.denied++
        const code = answer.code ?? 'denied'
        decision = { allowed: false, code, message: answer.message ?? `refused by the ${hook} hook` }
        this.deps.log.info({ event: 'proxy.denied', hook, clientId: caller.clientId, connectionId: caller.connectionId, protocol: caller.protocol, room: fields.room, method: fields.method, code, traceId }, `the ${hook} hook refused`)
      }
    } catch (err) {
      const failure: ProxyFailure = err instanceof Failed
        ? { outcome: err.outcome, reason: err.message, ...(err.status === undefined ? {} : { status: err.status }) }
        : { outcome: 'invalid', reason: (err as Error).message }
      outcome = failure.outcome
      stats.failures++
      const policy = hook === 'rpc' ? 'deny' : this.policies[hook as Exclude<ProxyHook, 'rpc'>]
      decision = policy === 'allow'
        ? { allowed: true, answer: { allow: true } as Allowed<H>, failure }
        : { allowed: false, code: 'unavailable', message: `the ${hook} hook (${PROXY_URL_VARIABLE[hook]}) failed: ${failure.reason}`, failure }
      this.deps.log.warn({ event: 'proxy.failed', hook, url: shownUrl(url), outcome, reason: failure.reason, status: failure.status, policy: hook === 'rpc' ? 'error' : policy, clientId: caller.clientId, connectionId: caller.connectionId, protocol: caller.protocol, room: fields.room, method: fields.method, traceId }, `the ${hook} hook failed: ${policy === 'allow' ? 'allowed by its policy' : 'refused'}`)
      span?.setStatus({ code: SpanStatusCode.ERROR, message: failure.reason })
    }
    span?.setAttribute('switchboard.proxy.outcome', outcome)
    span?.end()
    this.deps.observe?.(hook, outcome, (performance.now() - started) / 1000)
    return decision
  }

  /** One POST and its validated answer; throws Failed naming what went wrong. */
  private async post<H extends ProxyHook> (hook: H, url: string, headers: Record<string, string>, body: string): Promise<Static<typeof ANSWERS[H]>> {
    const { status, text } = await this.exchange(url, headers, body)
    if (status < 200 || status > 299) throw new Failed('http_error', `the backend answered HTTP ${status}`, status)
    if (jsonTextDepth(text, this.maxDepth) < 0) throw new Failed('invalid', `the answer nests deeper than ${this.maxDepth} levels`)
    let answer: unknown
    try {
      answer = parseJson(text)
    } catch (err) {
      throw new Failed('invalid', `the answer is not JSON: ${(err as Error).message.slice(0, 120)}`)
    }
    const check = CHECKS[hook] as TypeCheck<TSchema>
    if (!check.Check(answer)) {
      const first = check.Errors(answer).First()
      throw new Failed('invalid', `the answer does not fit the ${hook} hook's schema: ${first === undefined ? 'invalid' : `${first.path || '/'} ${first.message}`}`)
    }
    return answer as Static<typeof ANSWERS[H]>
  }

  /**
   * The POST over a kept-alive connection (node:http: a fraction of fetch's
   * cost per request), and the answer's status and body, read up to
   * maxResponseBytes; the whole exchange within timeoutMs. Redirects are not
   * followed (a 3xx is an HTTP error).
   */
  private exchange (url: string, headers: Record<string, string>, body: string): Promise<{ status: number, text: string }> {
    const max = this.maxResponseBytes
    const target = new URL(url)
    const https = target.protocol === 'https:'
    return new Promise((resolve, reject) => {
      let settled = false
      const fail = (err: Failed) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        req.destroy()
        reject(err)
      }
      const req = (https ? httpsRequest : httpRequest)(target, {
        method: 'POST',
        agent: https ? this.agents.https : this.agents.http,
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }
      }, res => {
        const status = res.statusCode ?? 0
        const declared = Number(res.headers['content-length'])
        if (Number.isFinite(declared) && declared > max) return fail(new Failed('invalid', `the answer is larger than ${max} bytes (content-length ${declared})`))
        const chunks: Buffer[] = []
        let bytes = 0
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length
          if (bytes > max) return fail(new Failed('invalid', `the answer is larger than ${max} bytes`))
          chunks.push(chunk)
        })
        res.on('end', () => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          resolve({ status, text: Buffer.concat(chunks).toString('utf8') })
        })
        res.on('error', err => fail(new Failed('unreachable', `the answer broke off (${err.message})`)))
        res.on('aborted', () => fail(new Failed('unreachable', 'the answer broke off')))
      })
      const timer = setTimeout(() => fail(new Failed('timeout', `no answer within ${this.timeoutMs} ms (PROXY_TIMEOUT_MS)`)), this.timeoutMs)
      req.on('error', err => fail(new Failed('unreachable', `could not reach the backend (${(err as NodeJS.ErrnoException).code ?? err.message})`)))
      req.end(body)
    })
  }

  /** Closes the kept-alive connections (the plugin's onClose). */
  close (): void {
    this.agents.http.destroy()
    this.agents.https.destroy()
  }
}

/**
 * A refusal as the contract error a client gets: `forbidden` when the backend
 * refused (`reason` is its code), `unavailable` when the hook failed under
 * the `deny` policy (`reason` is the failure: timeout, unreachable, ...).
 */
export function proxyError (hook: ProxyHook, decision: ProxyRefused, what: string = hook): WsError {
  if (decision.failure !== undefined) return new WsError('unavailable', `${what}: ${decision.message}; retry later`, { hook, reason: decision.failure.outcome })
  return new WsError('forbidden', `${what}: refused by the ${hook} hook (${PROXY_URL_VARIABLE[hook]}): ${decision.message}`, { hook, reason: decision.code })
}

/** What the connect hook granted a connection: kept from the upgrade to its session. */
export interface ConnectGrant {
  connectionId: string
  clientId?: string
  rooms?: string[]
  data?: unknown
}

/** The proxy as other plugins use it: the client, and the connect hook's grants from upgrade to session. */
export class ProxyHooks {
  private readonly byRequest = new WeakMap<FastifyRequest, ConnectGrant>()
  private readonly bySession = new WeakMap<Session, ConnectGrant>()

  constructor (readonly client: ProxyClient, private readonly log: FastifyBaseLogger) {}

  has (hook: ProxyHook): boolean {
    return this.client.has(hook)
  }

  /**
   * The connect hook at an upgrade (the upgrade helper's last check, once the
   * slot is held): 403 with the backend's code and message when it refuses,
   * 503 `unavailable` when it fails under the `deny` policy. Resolves true when it refused (the reply is sent).
   */
  async connect (request: FastifyRequest, reply: FastifyReply, caller: ProxyCaller, renamable = true): Promise<boolean> {
    const headers = request.headers
    const decision = await this.client.call('connect', caller, {
      // what a backend authenticates a browser with, and where it connects from
      headers: { origin: headers.origin, cookie: headers.cookie, 'user-agent': headers['user-agent'] },
      remoteAddress: request.ip
    })
    if (!decision.allowed) {
      const status = decision.failure === undefined ? 403 : 503
      const code = decision.failure === undefined ? 'forbidden' : 'unavailable'
      const message = decision.failure === undefined ? `connect: refused by the connect hook (PROXY_CONNECT_URL): ${decision.message}` : `connect: ${decision.message}; retry later`
      reply.code(status).send(errorBody(status, code, message, { hook: 'connect', reason: decision.failure === undefined ? decision.code : decision.failure.outcome }))
      return true
    }
    const answer = decision.answer
    let clientId = answer.clientId
    if (clientId !== undefined && clientId !== caller.clientId && (!renamable || request.principal !== null)) {
      // the token (or the protocol) names the client: the backend may not rename it
      this.log.warn({ event: 'proxy.client_id_ignored', hook: 'connect', connectionId: caller.connectionId, clientId: caller.clientId, protocol: caller.protocol }, `the connect hook named another client id than the ${request.principal !== null ? 'token\'s sub' : 'protocol\'s own'}: that one is kept`)
      clientId = undefined
    }
    this.byRequest.set(request, { connectionId: caller.connectionId as string, clientId: clientId ?? caller.clientId, rooms: answer.rooms, data: answer.data })
    return false
  }

  /** The grant of an upgrade request that passed the connect hook (undefined without the hook). */
  grantOf (request: FastifyRequest): ConnectGrant | undefined {
    return this.byRequest.get(request)
  }

  /** Keeps a request's grant for its session (the welcome's `data`, the rooms to join). */
  attach (session: Session, grant: ConnectGrant | undefined): void {
    if (grant !== undefined) this.bySession.set(session, grant)
  }

  /** The connect hook's grant of a session, if it had one. */
  sessionGrant (session: Session): ConnectGrant | undefined {
    return this.bySession.get(session)
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The backend hooks (PROXY_*_URL): connect, join, publish, rpc. */
    proxy: ProxyHooks
  }
}

/** Decorates `proxy`; without URLs every hook allows and nothing is sent. */
export default fp<ProxyOptions>(async function proxy (app, opts) {
  const metrics = app.metrics
  const client = new ProxyClient(opts, {
    log: app.log,
    tracer: app.tracing.enabled ? app.tracing.tracer : undefined,
    observe: (hook, outcome, seconds) => metrics.proxyDuration.observe({ hook, outcome }, seconds)
  })
  app.decorate('proxy', new ProxyHooks(client, app.log))
  app.statusReport.section('proxy', () => client.status())
  app.addHook('onClose', async () => client.close())
}, { name: 'proxy', fastify: '5.x', dependencies: ['metrics', 'status', 'tracing'] })
