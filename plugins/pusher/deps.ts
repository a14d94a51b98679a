// Every import of the Pusher plugin from the rest of the project goes through
// this one file, so a move of the other plugins changes only these paths.
export { ConfigError, type Config } from '../config.js'
export { closeCodeLabel } from '../metrics.js'
export type { Fanout } from '../fanout.js'
export type { RedisLink } from '../redis.js'
export { textFrame } from '../connections.js'
