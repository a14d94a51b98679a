// Every import of the Yjs plugin from the rest of the project goes through
// this one file: the public plugin of each lower layer, never its internals.
export { tokenRequired } from '../transport/index.js'
export { KEY_PREFIX, type Principal } from '../core/index.js'
export { closeCodeLabel } from '../observability/index.js'
export { rateLimit } from '../http/index.js'
