import { createPublicKey, type KeyObject } from 'node:crypto'
import { createRemoteJWKSet, customFetch, errors, jwtVerify, type JWTPayload, type JWTVerifyOptions } from 'jose'
import type { FastifyBaseLogger } from 'fastify'

/** The asymmetric algorithms AUTH_ALGORITHMS may name (jose verifies them; the key's type must match). */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const
/** The one shared-secret algorithm (AUTH_SECRET). */
export const SECRET_ALGORITHM = 'HS256'

/** Bytes a JWKS answer may have: a key set is a few KB; more is refused, not parsed. */
export const JWKS_MAX_BYTES = 1024 * 1024

/** Where the public keys of asymmetric tokens come from, and what their tokens must say. */
export interface PublicKeyOptions {
  /** AUTH_JWKS_URL: a JSON Web Key Set, fetched at start, on a schedule and (bounded) on an unknown kid. */
  jwksUrl?: string
  /** AUTH_PUBLIC_KEY: one PEM public key (SPKI or a certificate). */
  publicKey?: string
  /** The asymmetric algorithms accepted (a subset of ASYMMETRIC_ALGORITHMS). */
  algorithms: string[]
  /** AUTH_ISSUER: the `iss` such tokens must carry. */
  issuer?: string
  /** AUTH_AUDIENCE: `aud` must include one of these. */
  audience?: string[]
  /** AUTH_CLOCK_SKEW_S: seconds of tolerance on exp and nbf. */
  clockSkewS: number
  /** AUTH_JWKS_REFRESH_MS: the key set is fetched again this often (failures keep the keys held). */
  refreshMs: number
  /** AUTH_JWKS_COOLDOWN_MS: at most one fetch caused by tokens (an unknown kid, no keys yet) per this long. */
  cooldownMs: number
  /** Abort a JWKS request after this long [5000]. */
  timeoutMs?: number
  log?: FastifyBaseLogger
}

/** Why an asymmetric token was refused, in AuthError's words. */
export class KeyError extends Error {
  constructor (readonly reason: 'malformed' | 'invalid' | 'expired' | 'issuer' | 'audience' | 'algorithm' | 'unknown_key' | 'keys_unavailable', message: string) {
    super(message)
  }
}

/** PEM text as an environment variable may carry it: literal `\n` escapes become newlines. */
export function parsePublicKey (pem: string): KeyObject {
  const text = pem.includes('\\n') ? pem.replace(/\\n/g, '\n') : pem
  return createPublicKey(text)
}

/** A fetch for jose that refuses an answer past JWKS_MAX_BYTES instead of parsing it. */
async function boundedFetch (url: string, init: RequestInit): Promise<Response> {
  const response = await fetch(url, init)
  const declared = Number(response.headers.get('content-length') ?? 0)
  if (declared > JWKS_MAX_BYTES) {
    await response.body?.cancel()
    throw new Error(`the key set is larger than ${JWKS_MAX_BYTES} bytes`)
  }
  const chunks: Uint8Array[] = []
  let size = 0
  if (response.body !== null) {
    for await (const chunk of response.body) {
      size += chunk.byteLength
      if (size > JWKS_MAX_BYTES) throw new Error(`the key set is larger than ${JWKS_MAX_BYTES} bytes`)
      chunks.push(chunk)
    }
  }
  return new Response(Buffer.concat(chunks), { status: response.status, headers: response.headers })
}

/**
 * Verifies asymmetric tokens (RS*, PS*, ES*, EdDSA) with jose, against one PEM
 * key or a remote JWKS. jose's remote set fetches, parses and picks the key
 * by `kid` and `alg`; when it fetches is decided here: once at start, every
 * `refreshMs` on a timer (a failure keeps the keys already held), and on a
 * token whose `kid` is unknown (or while no key set was ever fetched) at most
 * once per `cooldownMs`, whatever the outcome, so a flood of forged `kid`s
 * or an issuer that is down cannot make us hammer it.
 */
export class PublicKeys {
  readonly source: 'jwks' | 'pem'
  /** Fetches of the key set so far (at start, scheduled, caused by tokens). */
  fetches = 0
  /** Counts the key sets fetched: a token verified under an older one is verified again (Auth's remembered tokens). */
  generation = 0
  private readonly key: KeyObject | null
  private readonly jwks: ReturnType<typeof createRemoteJWKSet> | null
  private readonly options: JWTVerifyOptions
  private lastDemand = -Infinity
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly opts: PublicKeyOptions) {
    this.options = {
      algorithms: opts.algorithms,
      clockTolerance: opts.clockSkewS,
      ...(opts.issuer === undefined ? {} : { issuer: opts.issuer }),
      ...(opts.audience === undefined ? {} : { audience: opts.audience })
    }
    if (opts.publicKey !== undefined) {
      this.source = 'pem'
      this.key = parsePublicKey(opts.publicKey)
      this.jwks = null
    } else if (opts.jwksUrl !== undefined) {
      this.source = 'jwks'
      this.key = null
      // jose never refetches on its own (an infinite cooldown and age): this class decides when
      this.jwks = createRemoteJWKSet(new URL(opts.jwksUrl), {
        cooldownDuration: Infinity,
        cacheMaxAge: Infinity,
        timeoutDuration: opts.timeoutMs ?? 5000,
        [customFetch]: (url: string, init: RequestInit) => {
          this.fetches++
          return boundedFetch(url, init)
        }
      })
    } else {
      throw new Error('PublicKeys needs a jwksUrl or a publicKey')
    }
  }

  /** Fetches the key set now and then every refreshMs (a JWKS source); never throws. */
  async start (): Promise<void> {
    if (this.jwks === null) return
    this.lastDemand = Date.now()
    await this.refresh('start')
    this.timer = setInterval(() => { this.refresh('schedule').catch(() => {}) }, this.opts.refreshMs)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /** The keys the remote set holds now (JWK objects), or undefined before a first successful fetch. */
  keys (): unknown[] | undefined {
    return this.jwks?.jwks()?.keys
  }

  private async refresh (why: 'start' | 'schedule' | 'unknown_kid'): Promise<boolean> {
    const jwks = this.jwks
    if (jwks === null) return false
    try {
      await jwks.reload()
      this.generation++
      this.opts.log?.info({ event: 'auth.jwks_fetched', why, keys: jwks.jwks()?.keys.length ?? 0 }, 'JWKS fetched')
      return true
    } catch (err) {
      this.opts.log?.warn({ event: 'auth.jwks_fetch_failed', why, error: (err as Error).message }, 'JWKS could not be fetched: the keys already held stay in use')
      return false
    }
  }

  /** A token-caused fetch, if the cooldown allows one (or one is already under way: it is shared). */
  private async demand (): Promise<boolean> {
    const jwks = this.jwks
    if (jwks === null) return false
    if (!jwks.reloading) {
      if (Date.now() - this.lastDemand < this.opts.cooldownMs) return false
      this.lastDemand = Date.now()
    }
    return await this.refresh('unknown_kid')
  }

  /** The verified payload; throws KeyError naming the cause (never the token). */
  async verify (token: string): Promise<JWTPayload> {
    if (this.key !== null) return await this.check(token, this.key)
    const jwks = this.jwks!
    if (jwks.jwks() === undefined && !(await this.demand())) {
      throw new KeyError('keys_unavailable', 'the key set (AUTH_JWKS_URL) could not be fetched yet; try again later')
    }
    try {
      return await this.check(token, jwks)
    } catch (err) {
      if (!(err instanceof KeyError && err.reason === 'unknown_key')) throw err
      if (!(await this.demand())) throw err
      return await this.check(token, jwks)
    }
  }

  private async check (token: string, key: KeyObject | ReturnType<typeof createRemoteJWKSet>): Promise<JWTPayload> {
    try {
      const { payload } = typeof key === 'function' ? await jwtVerify(token, key, this.options) : await jwtVerify(token, key, this.options)
      return payload
    } catch (err) {
      throw explain(err, this.source)
    }
  }
}

/** jose's error as a KeyError naming the cause. */
function explain (err: unknown, source: 'jwks' | 'pem'): KeyError {
  if (err instanceof errors.JWTExpired) return new KeyError('expired', 'token expired')
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return new KeyError('issuer', 'token issuer (iss) is not the one this server trusts (AUTH_ISSUER)')
    if (err.claim === 'aud') return new KeyError('audience', 'token audience (aud) does not include this server (AUTH_AUDIENCE)')
    if (err.claim === 'nbf') return new KeyError('invalid', 'token is not valid yet (nbf)')
    return new KeyError('invalid', `token claim ${err.claim} is invalid`)
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return new KeyError('algorithm', 'token algorithm is not allowed (AUTH_ALGORITHMS)')
  if (err instanceof errors.JWKSNoMatchingKey) return new KeyError('unknown_key', 'no key of the key set (AUTH_JWKS_URL) matches this token\'s kid and algorithm')
  if (err instanceof errors.JWKSMultipleMatchingKeys) return new KeyError('unknown_key', 'several keys of the key set (AUTH_JWKS_URL) match this token: the token must name its key (kid)')
  if (err instanceof errors.JWSSignatureVerificationFailed) return new KeyError('invalid', 'invalid token: signature verification failed')
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return new KeyError('malformed', 'malformed token')
  if (err instanceof TypeError && source === 'pem') return new KeyError('algorithm', 'token algorithm does not fit the key AUTH_PUBLIC_KEY')
  if (err instanceof errors.JOSENotSupported) return new KeyError('algorithm', 'token algorithm is not supported')
  return new KeyError('invalid', 'invalid token')
}
