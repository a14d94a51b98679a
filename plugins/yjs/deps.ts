// Every import of the Yjs plugin from other project files goes through here,
// so a change of layout touches this one file.
export { tokenRequired } from '../auth.js'
export type { Principal } from '../identity.js'
export { closeCodeLabel } from '../metrics.js'
export { default as rateLimit } from '../rate-limit.js'
export { KEY_PREFIX } from '../redis.js'
