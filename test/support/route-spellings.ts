/**
 * Every route of the app, seen from the app itself, and the spellings of its
 * path a client can send: what the access tests (auth, rate limit) walk, so a
 * route added later is covered without editing them.
 */
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'

export interface SeenRoute {
  method: string
  url: string
  websocket: boolean
}

/** Routes that need no token and have no rate limit, on purpose (docs/security.md). Everything else must be protected. */
export const PUBLIC_ROUTES = [/^\/admin$/, /^\/health$/, /^\/ready$/, /^\/metrics$/, /^\/docs(\/|$)/, /^\/\*$/, /^\*$/]

export const isPublic = (route: SeenRoute) => PUBLIC_ROUTES.some(re => re.test(route.url))

/**
 * WebSocket routes whose protocol authenticates after the upgrade, on purpose:
 * Hocuspocus (`/collab`) carries a token per document in its Auth message and
 * nothing of a document is served before it (test/yjs.hocuspocus.test.ts). In
 * auth mode they are not refused at the upgrade; every other route is.
 */
export const IN_PROTOCOL_AUTH_ROUTES = [/^\/collab$/]

export const authenticatesInProtocol = (route: SeenRoute) => route.websocket && IN_PROTOCOL_AUTH_ROUTES.some(re => re.test(route.url))

/**
 * Hooks for `build(..., { before })`: records every route as it is declared,
 * and names on each answer the route that served it (x-test-route), so a test
 * can tell which spellings the router took for which route.
 */
export function watchRoutes (seen: SeenRoute[]) {
  return (server: FastifyInstance) => {
    server.addHook('onRoute', route => {
      for (const method of [route.method].flat()) {
        seen.push({ method, url: route.url ?? route.path, websocket: Boolean((route as { websocket?: boolean }).websocket || (route as { wsHandler?: unknown }).wsHandler) })
      }
    })
    // from the start: a stream (/sse, /stream) is hijacked and sends the headers set so far, without onSend
    server.addHook('onRequest', (request, reply, done) => {
      reply.header('x-test-route', request.routeOptions.url ?? 'unmatched')
      done()
    })
    server.addHook('onSend', async (request, reply) => {
      reply.header('x-test-route', request.routeOptions.url ?? 'unmatched')
    })
  }
}

/** A concrete path for a route pattern. */
export function concretePath (url: string): string {
  return url.replace(/:[A-Za-z]+/g, 'lobby').replace(/\*/g, 'x')
}

const encode = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`

/**
 * Ways to write `path` that a router might take as the same route:
 * percent-encoding of any one character (upper- and lower-case hex) and of all
 * of them, other case, duplicate and trailing slashes, dot segments, an encoded
 * slash, a fragment, `;` parameters, a query, and the absolute form.
 */
export function spellings (path: string, origin: string): string[] {
  const out = new Set<string>([path])
  const chars = [...path]
  chars.forEach((c, i) => {
    if (c === '/') return
    const upper = encode(c)
    out.add(chars.slice(0, i).join('') + upper + chars.slice(i + 1).join(''))
    out.add(chars.slice(0, i).join('') + upper.toLowerCase() + chars.slice(i + 1).join(''))
  })
  out.add(chars.map(c => c === '/' ? c : encode(c)).join(''))
  out.add(chars.map(c => c === '/' ? c : encode(c).toLowerCase()).join(''))
  out.add(path.toUpperCase())
  out.add(path.replace(/^\/(.)/, (_m, c: string) => `/${c.toUpperCase()}`))
  out.add(`${path}/`)
  out.add(`/${path}`)
  out.add(path.replace(/\/([^/]*)$/, '//$1'))
  out.add(path.replace(/\/([^/]*)$/, '/./$1'))
  out.add(path.replace(/^\/([^/]+)\//, '/$1/../$1/'))
  out.add(path.replace(/\/([^/]*)$/, '%2F$1'))
  out.add(`${path}#fragment`)
  out.add(`${path};x=1`)
  out.add(`${path}?x=1`)
  out.add(`${origin}${path}`)
  return [...out]
}

export interface Answer {
  status: number
  /** The route pattern that answered (x-test-route); 'upgraded' for a 101. */
  route: string
}

/** One request with the raw request target, as a client may send it. */
export function send (port: number, method: string, target: string, headers: Record<string, string> = {}, localAddress?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const hasBody = method === 'POST' || method === 'PATCH' || method === 'PUT'
    const req = http.request({ host: '127.0.0.1', port, method, path: target, localAddress, agent: false, headers: hasBody ? { 'content-type': 'application/json', ...headers } : headers }, res => {
      const answer = { status: res.statusCode ?? 0, route: String(res.headers['x-test-route'] ?? '') }
      // a stream (SSE, NDJSON) is answered once its headers came: it has no end
      if (res.statusCode === 200 && /^(text\/event-stream|application\/x-ndjson)/.test(String(res.headers['content-type']))) {
        req.destroy()
        resolve(answer)
        return
      }
      res.resume()
      res.on('end', () => resolve(answer))
    })
    // after a stream's destroy, its error comes once the promise is settled: a no-op
    req.on('error', reject)
    req.end(hasBody ? '{}' : undefined)
  })
}

/** A WebSocket upgrade request with the raw request target: 101 when accepted, the HTTP answer otherwise. */
export function upgrade (port: number, target: string, headers: Record<string, string> = {}, localAddress?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path: target,
      localAddress,
      agent: false,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'), ...headers }
    })
    req.on('upgrade', (_res, socket) => {
      socket.destroy()
      resolve({ status: 101, route: 'upgraded' })
    })
    req.on('response', res => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, route: String(res.headers['x-test-route'] ?? '') }))
    })
    req.on('error', reject)
    req.end()
  })
}
