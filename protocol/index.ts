/**
 * The wire: what client and server say to each other. Frame types, error
 * codes with their HTTP status, limits, the client-id and room-name patterns,
 * the hardened RFC 7396 merge patch and the TypeBox schemas of the fields and
 * of every frame in both directions. Nothing here imports server code; the
 * browser client takes ./frames, ./errors, ./limits and ./merge-patch (TypeBox
 * only comes with ./schemas, ./client-frames and ./server-frames).
 */
export * from './frames.js'
export * from './errors.js'
export * from './limits.js'
export * from './merge-patch.js'
export * as schemas from './schemas.js'
export * as clientFrames from './client-frames.js'
export * as serverFrames from './server-frames.js'
