import fp from 'fastify-plugin'
import { createVerifier, TokenError } from 'fast-jwt'
import { decodeProtectedHeader } from 'jose'
import { createHash, timingSafeEqual } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Principal } from '../core/identity.js'
import { ClientId } from '../../protocol/schemas.js'
import { WsError } from '../../protocol/errors.js'
import { accessTo, allows, maySendAs, mayWrite, type RoomAction } from './access.js'
import { errorBody } from '../core/errors.js'
import { KeyError, PublicKeys, SECRET_ALGORITHM, type PublicKeyOptions } from './token-keys.js'
import { VerifiedTokens } from './verified-tokens.js'

export { ADMIN_ROLE, ADMIN_READONLY_ROLE, isAdmin, type RoomAction } from './access.js'

export interface AuthOptions {
  /** AUTH_SECRET: the HS256 key; absent = open mode, every request is anonymous. */
  secret?: string
  /**
   * Opaque bearer secrets that stand for a fixed principal (ADMIN_TOKEN,
   * ADMIN_READONLY_TOKEN), accepted in open and auth mode alike; compared in
   * constant time.
   */
  staticTokens?: StaticToken[]
  /**
   * Asymmetric tokens (AUTH_JWKS_URL or AUTH_PUBLIC_KEY, AUTH_ALGORITHMS,
   * AUTH_ISSUER, AUTH_AUDIENCE, AUTH_CLOCK_SKEW_S): verified with jose. With
   * or without a secret; either one turns auth mode on.
   */
  publicKeys?: Omit<PublicKeyOptions, 'log'>
  /** AUTH_ALGORITHMS allows HS256 (default true when a secret is set). */
  allowSecret?: boolean
  /** AUTH_CLOCK_SKEW_S for HS256 tokens too [0]. */
  clockSkewS?: number
  /** Verified tokens remembered (VerifiedTokens), so a repeated bearer is not verified per request; 0 turns it off [4096]. */
  verifiedCacheSize?: number
  /** How long a verified token is trusted without a new check, at most (never past its exp) [60000]. */
  verifiedCacheMaxAgeMs?: number
}

/** A bearer secret and the principal it stands for. */
export interface StaticToken { token: string, principal: Principal }

/** SHA-256 of a secret: equal-length inputs for timingSafeEqual, whatever the lengths given. */
const digest = (value: string) => createHash('sha256').update(value).digest()

/** The claims a token must carry to be accepted; `sub` becomes the client id. */
const Claims = TypeCompiler.Compile(Type.Object({
  sub: ClientId,
  role: Type.Optional(Type.String({ maxLength: 64 })),
  rooms: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 129 }), { maxItems: 256 })),
  exp: Type.Optional(Type.Number())
}))

export type AuthFailure = 'missing' | 'malformed' | 'invalid' | 'expired' | 'claims' | 'issuer' | 'audience' | 'algorithm' | 'unknown_key' | 'keys_unavailable'

export class AuthError extends Error {
  constructor (readonly reason: AuthFailure, message: string) {
    super(message)
  }
}

/** An algorithm name from a token's header, safe to repeat in an error. */
const shownAlgorithm = (alg: unknown) => typeof alg === 'string' && /^[A-Za-z0-9]{1,16}$/.test(alg) ? alg : 'of this token'

/**
 * Verifies tokens and says what a principal may do; no Fastify in here.
 * HS256 (AUTH_SECRET) goes through fast-jwt, synchronously (about 5 µs a
 * verify under load, against 150 µs for jose's asynchronous HMAC);
 * asymmetric tokens (RS*, PS*, ES*, EdDSA) through jose (PublicKeys). The
 * token's header picks the path, and only among the allowed algorithms.
 * Either way a token verified once is remembered (VerifiedTokens, keyed by the
 * token string) until its exp or a minute, whichever is first, and answered
 * synchronously from there: a service's bearer costs one Map lookup per
 * request. A change of the public key set forgets them all.
 */
export class Auth {
  readonly enabled: boolean
  /** The asymmetric side (AUTH_JWKS_URL or AUTH_PUBLIC_KEY), when configured. */
  readonly publicKeys: PublicKeys | null
  private readonly verifier: ((token: string) => unknown) | null
  private readonly staticTokens: Array<{ digest: Buffer, principal: Principal }>
  private readonly allowed: ReadonlySet<string>
  /** Tokens verified already (HS256 and asymmetric alike): answered without a signature check until their exp. */
  readonly verified: VerifiedTokens
  /** The public key set's generation the remembered tokens were verified under. */
  private keysGeneration = 0

  constructor (secret: string | undefined, staticTokens: StaticToken[] = [], opts: Pick<AuthOptions, 'publicKeys' | 'allowSecret' | 'clockSkewS' | 'verifiedCacheSize' | 'verifiedCacheMaxAgeMs'> & { log?: PublicKeyOptions['log'], now?: () => number } = {}) {
    const hasSecret = secret !== undefined && secret !== '' && opts.allowSecret !== false
    this.publicKeys = opts.publicKeys === undefined ? null : new PublicKeys({ ...opts.publicKeys, log: opts.log })
    this.enabled = hasSecret || this.publicKeys !== null
    this.allowed = new Set([...(hasSecret ? [SECRET_ALGORITHM] : []), ...(opts.publicKeys?.algorithms ?? [])])
    // algorithms pinned: a token signed with `none` or RS256 is refused by this verifier, whatever its header says;
    // no cache of its own: `verified` remembers the principal itself (no SHA-256 of the token, no claims check again)
    this.verifier = hasSecret ? createVerifier({ key: secret, algorithms: ['HS256'], cache: false, clockTolerance: (opts.clockSkewS ?? 0) * 1000 }) : null
    this.verified = new VerifiedTokens({ maxEntries: opts.verifiedCacheSize, maxAgeMs: opts.verifiedCacheMaxAgeMs, clockSkewS: opts.clockSkewS, now: opts.now })
    this.staticTokens = staticTokens.filter(s => s.token !== '').map(s => ({ digest: digest(s.token), principal: s.principal }))
  }

  /** Whether any static token (ADMIN_TOKEN, ADMIN_READONLY_TOKEN) is configured. */
  get hasStaticTokens (): boolean {
    return this.staticTokens.length > 0
  }

  /** The principal of a static token, or undefined; every configured token is compared, in constant time. */
  staticPrincipal (token: string): Principal | undefined {
    const given = digest(token)
    let found: Principal | undefined
    for (const entry of this.staticTokens) if (timingSafeEqual(entry.digest, given)) found ??= entry.principal
    return found
  }

  /**
   * The token's principal, for every door (the upgrade, the HTTP API,
   * Hocuspocus's in-band Auth, a refresh): rejects with AuthError naming the
   * cause (never with the token in its message).
   */
  async verify (token: string): Promise<Principal> {
    return await this.verifyNow(token)
  }

  /**
   * As verify, but an HS256 token is answered synchronously (its principal, or
   * a throw): the onRequest hook stays free of a promise per request. An
   * asymmetric token gives a promise.
   */
  verifyNow (token: string): Principal | Promise<Principal> {
    if (!this.enabled) throw new AuthError('invalid', 'auth is not enabled')
    const keys = this.publicKeys
    // a key withdrawn from the set (or replaced) must refuse its tokens from now on: verify them all again
    if (keys !== null && keys.generation !== this.keysGeneration) {
      this.verified.clear()
      this.keysGeneration = keys.generation
    }
    const known = this.verified.get(token)
    if (known !== undefined) return known
    if (keys === null) return this.remember(token, this.verifySecret(token))
    let alg: unknown
    try {
      alg = decodeProtectedHeader(token).alg
    } catch {
      throw new AuthError('malformed', 'malformed token')
    }
    if (typeof alg !== 'string' || !this.allowed.has(alg)) throw new AuthError('algorithm', `token algorithm ${shownAlgorithm(alg)} is not allowed (AUTH_ALGORITHMS: ${[...this.allowed].join(', ')})`)
    if (alg === SECRET_ALGORITHM) return this.remember(token, this.verifySecret(token))
    const generation = keys.generation
    return keys.verify(token).then(payload => {
      const principal = principalOf(payload)
      // verified under a key set that has changed since: not remembered (the next request checks it again)
      if (keys.generation === generation && this.keysGeneration === generation) this.remember(token, principal)
      return principal
    }, err => {
      throw err instanceof KeyError ? new AuthError(err.reason, err.message) : new AuthError('invalid', 'invalid token')
    })
  }

  private remember (token: string, principal: Principal): Principal {
    this.verified.set(token, principal)
    return principal
  }

  private verifySecret (token: string): Principal {
    if (!this.verifier) throw new AuthError('algorithm', `token algorithm ${SECRET_ALGORITHM} is not allowed (AUTH_ALGORITHMS: ${[...this.allowed].join(', ')})`)
    let payload: unknown
    try {
      payload = this.verifier(token)
    } catch (err) {
      if (err instanceof TokenError && err.code === TokenError.codes.expired) throw new AuthError('expired', 'token expired')
      if (err instanceof TokenError && err.code === TokenError.codes.malformed) throw new AuthError('malformed', 'malformed token')
      if (err instanceof TokenError && err.code === TokenError.codes.invalidAlgorithm) throw new AuthError('algorithm', `token algorithm is not allowed (AUTH_ALGORITHMS: ${[...this.allowed].join(', ')})`)
      throw new AuthError('invalid', 'invalid token')
    }
    return principalOf(payload)
  }

  /**
   * The one access gate for rooms and documents, asked by every door (the
   * WebSocket handlers, the HTTP routes, the Yjs protocols): throws
   * `forbidden` unless the principal may do `action` in `room` (access.ts).
   */
  authorize (principal: Principal | null | undefined, room: string, action: RoomAction): void {
    const access = accessTo(principal, room)
    if (allows(access, action)) return
    if (access === null) throw new WsError('forbidden', `this token may not use room ${room}`)
    throw new WsError('forbidden', mayWrite(principal) ? `this token may only read room ${room} (its rooms claim says read:)` : `a read-only admin token may not ${action} in room ${room}`)
  }

  /** Throws `forbidden` unless the principal may send a direct message as `from` (its own sub; any for `service` and `admin`; never read-only). */
  authorizeSender (principal: Principal | null | undefined, from: string): void {
    if (maySendAs(principal, from)) return
    throw new WsError('forbidden', mayWrite(principal) ? `this token may only send as ${principal?.sub}` : 'a read-only admin token may not send messages')
  }

  /** Whether the principal may send as `from` (see authorizeSender). */
  maySendAs (principal: Principal | null | undefined, from: string): boolean {
    return maySendAs(principal, from)
  }
}

/** A verified payload as a principal: the claims every door reads, checked. */
function principalOf (payload: unknown): Principal {
  if (!Claims.Check(payload)) throw new AuthError('claims', 'token claims are invalid: sub must be a client id, rooms a list of names')
  const { sub, role, rooms, exp } = payload
  return { sub, ...(role === undefined ? {} : { role }), ...(rooms === undefined ? {} : { rooms }), ...(exp === undefined ? {} : { exp }) }
}

/** The bearer token of a request: the Authorization header, or `?token=` on a route whose config allows it (the upgrade). */
export function tokenOf (request: FastifyRequest, allowQuery: boolean): string | AuthError | undefined {
  const header = request.headers.authorization
  if (header !== undefined) {
    const match = /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(header.trim())
    return match ? match[1] : new AuthError('malformed', 'the Authorization header must be "Bearer <token>"')
  }
  if (allowQuery) {
    const query = request.query as Record<string, unknown> | undefined
    const token = query?.token
    if (typeof token === 'string' && token !== '') return token
  }
  return undefined
}

declare module 'fastify' {
  interface FastifyInstance {
    auth: Auth
  }
  interface FastifyRequest {
    /** Why the request's token was refused; checked before the route runs. */
    authFailure: AuthError | null
  }
  interface FastifyContextConfig {
    /** The route takes the token from `?token=` too (a browser cannot set headers on a WebSocket). */
    tokenInQuery?: boolean
    /** What a room route (`:room` parameter) asks the access gate for [read]. */
    roomAction?: RoomAction
  }
}

/**
 * Token auth. onRequest verifies the token and sets `request.principal`, so the
 * rate limit and the connection limits already count by `sub`. Which routes
 * need a token is decided by where they are registered: inside a context that
 * registers `tokenRequired` (below), never by comparing the URL's text.
 */
export default fp<AuthOptions>(async function auth (app, opts) {
  const auth = new Auth(opts.secret, opts.staticTokens, { publicKeys: opts.publicKeys, allowSecret: opts.allowSecret, clockSkewS: opts.clockSkewS, verifiedCacheSize: opts.verifiedCacheSize, verifiedCacheMaxAgeMs: opts.verifiedCacheMaxAgeMs, log: app.log })
  app.decorate('auth', auth)
  app.decorateRequest('authFailure', null)
  if (auth.publicKeys) {
    const keys = auth.publicKeys
    await keys.start()
    app.addHook('onClose', async () => keys.stop())
  }

  if (!auth.enabled) {
    app.log.warn({ event: 'auth.open_mode' }, 'none of AUTH_SECRET, AUTH_JWKS_URL, AUTH_PUBLIC_KEY is set: open mode, any client may connect under any client id')
    // open mode: only a static token (ADMIN_TOKEN) makes a principal; any other bearer is ignored, as before
    if (!auth.hasStaticTokens) return
    app.addHook('onRequest', async (request) => {
      const found = tokenOf(request, request.routeOptions.config.tokenInQuery === true)
      if (typeof found === 'string') request.principal = auth.staticPrincipal(found) ?? null
    })
    return
  }

  const refused = (request: FastifyRequest, err: unknown) => {
    request.authFailure = err instanceof AuthError ? err : new AuthError('invalid', 'invalid token')
  }
  // a callback hook: no promise and microtask per request for an HS256 token (an asymmetric one waits for jose)
  app.addHook('onRequest', function verifyToken (request, _reply, done) {
    const found = tokenOf(request, request.routeOptions.config.tokenInQuery === true)
    if (found instanceof AuthError) {
      request.authFailure = found
    } else if (found !== undefined) {
      const fixed = auth.hasStaticTokens ? auth.staticPrincipal(found) : undefined
      if (fixed) {
        request.principal = fixed
      } else {
        let verified: Principal | Promise<Principal>
        try {
          verified = auth.verifyNow(found)
        } catch (err) {
          refused(request, err)
          return done()
        }
        if (verified instanceof Promise) {
          verified.then(principal => { request.principal = principal }, err => refused(request, err)).finally(() => done())
          return
        }
        request.principal = verified
      }
    }
    done()
  })
}, { name: 'auth', fastify: '5.x', dependencies: ['identity', 'sessions'] })

/**
 * Registered inside the encapsulated context that holds the protected routes:
 * in auth mode every route of that context (and every spelling of its path the
 * router accepts) refuses a request without a valid token with 401, in
 * preParsing, before its body is read. A failed attempt still counts against
 * its address's rate limit (the limit's onRequest hook runs first).
 */
export const tokenRequired = fp(async function tokenRequired (app) {
  if (!app.auth.enabled) return
  app.addHook('preParsing', function refuseWithoutToken (request: FastifyRequest, reply: FastifyReply, payload, done) {
    // a CORS preflight carries no credentials by design
    if (request.principal || request.method === 'OPTIONS') return done(null, payload)
    refuseUnauthenticated(request, reply)
  })
}, { name: 'token-required', fastify: '5.x', dependencies: ['auth'] })

/** Answers 401 naming why the request's token was refused (or that there was none); the token never appears. */
export function refuseUnauthenticated (request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const failure = request.authFailure ?? new AuthError('missing', 'a bearer token is required')
  request.log.warn({ event: 'auth.rejected', reason: failure.reason, clientKey: request.clientKey, url: request.routeOptions.url }, 'request refused: no valid token')
  return reply.code(401).header('www-authenticate', failure.reason === 'missing' ? 'Bearer' : 'Bearer error="invalid_token"')
    .send(errorBody(401, 'unauthorized', failure.message))
}
