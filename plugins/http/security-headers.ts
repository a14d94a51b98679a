import fp from 'fastify-plugin'
import helmet from '@fastify/helmet'

/**
 * The Content-Security-Policy of the pages (`/`, `/admin` and public/): every
 * script, style and image is a file of this origin (public/*.html have no
 * inline script or style), fetches and WebSockets go to this origin, and no
 * other site may frame them (clickjacking of the admin page's buttons).
 */
export const PAGE_CSP_DIRECTIVES = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:'],
  fontSrc: ["'self'"],
  connectSrc: ["'self'"],
  objectSrc: ["'none'"],
  baseUri: ["'self'"],
  formAction: ["'self'"],
  frameAncestors: ["'none'"]
}

/**
 * @fastify/helmet for the routes registered after it in the same encapsulated
 * context: the pages register it with themselves (plugins/http/pages.ts), so
 * the JSON API's hot path carries no extra hook or header. No
 * `upgrade-insecure-requests` (the server is often reached over plain HTTP on
 * loopback) and no HSTS: HTTPS is the TLS proxy's to declare, for its domain.
 */
export default fp(async function securityHeaders (app) {
  await app.register(helmet, {
    global: true,
    contentSecurityPolicy: { useDefaults: false, directives: PAGE_CSP_DIRECTIVES },
    strictTransportSecurity: false,
    // the same as frame-ancestors 'none', for browsers that predate it
    frameguard: { action: 'deny' }
  })
}, { name: 'security-headers', fastify: '5.x' })
