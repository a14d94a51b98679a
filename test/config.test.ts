import t from 'tap'
import { loadConfig, ConfigError, parseTrustProxy, redisClusterNodes, redisSentinels } from '../plugins/core/config.js'
import { runUntilExit } from './support/process.js'

t.test('defaults follow the contract', async t => {
  const c = loadConfig({})
  t.match(c, {
    PORT: 5001,
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    MAX_CONNECTIONS: 1000,
    MAX_CONNECTIONS_PER_CLIENT: 10,
    CORS_ORIGINS: 'http://localhost:3000,http://localhost:5000,http://127.0.0.1:3000,http://127.0.0.1:5000',
    RATE_LIMIT_MAX: 60,
    RATE_LIMIT_WINDOW_MS: 60000,
    WS_MAX_PAYLOAD: 65536,
    WS_MESSAGES_PER_SECOND: 50,
    HEARTBEAT_INTERVAL_MS: 30000,
    SHUTDOWN_GRACE_MS: 10000,
    DATA_DIR: './data',
    ROOM_HISTORY_SIZE: 100,
    MAX_ROOMS_PER_CONNECTION: 50,
    ROOM_STATE_MAX_BYTES: 262144,
    INBOX_MAX: 100,
    INBOX_TTL_MS: 86400000,
    TRUST_PROXY: 'false',
    ENABLE_CODE_EXECUTION: false,
    EXEC_TIMEOUT_MS: 1000,
    EXEC_MEMORY_MB: 32
  })
  t.equal(c.REDIS_URL, undefined)
  t.equal(c.REDIS_KEY_PREFIX, 'sb:', 'keys and channels start with sb: unless told otherwise')
  t.equal(loadConfig({ REDIS_KEY_PREFIX: 'tenant-a.v2:' }).REDIS_KEY_PREFIX, 'tenant-a.v2:')
  t.same(redisSentinels(loadConfig({ REDIS_SENTINELS: 's1:26379, [::1]:26380', REDIS_SENTINEL_NAME: 'mymaster' })),
    { sentinels: [{ host: 's1', port: 26379 }, { host: '::1', port: 26380 }], name: 'mymaster' })
  t.equal(redisSentinels(c), undefined)
  t.same(redisClusterNodes(loadConfig({ REDIS_CLUSTER_NODES: 'r1:7000, r2:7001' })), [{ host: 'r1', port: 7000 }, { host: 'r2', port: 7001 }])
  t.equal(redisClusterNodes(c), undefined)
  t.equal(c.AUTH_SECRET, undefined)
})

t.test('a bad value names the variable and what is expected', async t => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ MAX_CONNECTIONS: 'lots' }, /^Invalid configuration: MAX_CONNECTIONS must be an integer >= 1 \(got "lots"\)$/],
    [{ MAX_CONNECTIONS: '0' }, /MAX_CONNECTIONS must be an integer >= 1/],
    [{ PORT: '70000' }, /PORT must be an integer >= 0 and <= 65535/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent/],
    [{ ENABLE_CODE_EXECUTION: 'maybe' }, /ENABLE_CODE_EXECUTION must be true or false/],
    [{ REDIS_URL: 'localhost:6379' }, /REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ TRUST_PROXY: 'everyone' }, /TRUST_PROXY must be false, true, a hop count or a comma list/],
    [{ RATE_LIMIT_WINDOW_MS: '1.5' }, /RATE_LIMIT_WINDOW_MS must be an integer/],
    [{ REDIS_KEY_PREFIX: 'app{1}:' }, /^Invalid configuration: REDIS_KEY_PREFIX must be 1 to 32 of A-Z a-z 0-9 _ \. : - \(no braces: a hash tag would put every key on one cluster slot\) \(got "app\{1\}:"\)$/],
    [{ REDIS_KEY_PREFIX: 'x'.repeat(33) }, /REDIS_KEY_PREFIX must be 1 to 32 of/],
    [{ REDIS_KEY_PREFIX: 'a b' }, /REDIS_KEY_PREFIX must be 1 to 32 of/],
    [{ REDIS_SENTINELS: '10.0.0.1:26379,10.0.0.2' }, /^Invalid configuration: REDIS_SENTINELS must be a comma list of host:port \(got "10.0.0.2"\)$/],
    [{ REDIS_SENTINELS: 'a:26379,b:99999' }, /REDIS_SENTINELS must be a comma list of host:port \(got "b:99999"\)/],
    [{ REDIS_SENTINELS: 'a:26379' }, /^Invalid configuration: REDIS_SENTINELS needs REDIS_SENTINEL_NAME/],
    [{ REDIS_SENTINEL_NAME: 'mymaster' }, /^Invalid configuration: REDIS_SENTINEL_NAME needs REDIS_SENTINELS/],
    [{ REDIS_CLUSTER_NODES: '10.0.0.1:7000,10.0.0.2' }, /^Invalid configuration: REDIS_CLUSTER_NODES must be a comma list of host:port \(got "10.0.0.2"\)$/],
    [{ REDIS_CLUSTER_NODES: ' , ' }, /^Invalid configuration: REDIS_CLUSTER_NODES must be a comma list of host:port \(got none\)$/],
    [{ REDIS_CLUSTER_NODES: 'a:7000', REDIS_SENTINELS: 'b:26379', REDIS_SENTINEL_NAME: 'm' }, /^Invalid configuration: set REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both/],
    [{ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_NAME: 'my master' }, /REDIS_SENTINEL_NAME must be 1 to 128 of/]
  ]
  for (const [env, message] of cases) {
    t.throws(() => loadConfig(env), { name: 'ConfigError', message }, JSON.stringify(env))
  }
  t.ok(new ConfigError('x') instanceof Error)
})

t.test('FASTIFY_CLOSE_GRACE_DELAY is honoured when SHUTDOWN_GRACE_MS is unset', async t => {
  t.equal(loadConfig({ FASTIFY_CLOSE_GRACE_DELAY: '2500' }).SHUTDOWN_GRACE_MS, 2500)
  t.equal(loadConfig({ FASTIFY_CLOSE_GRACE_DELAY: '2500', SHUTDOWN_GRACE_MS: '4000' }).SHUTDOWN_GRACE_MS, 4000)
})

t.test('TRUST_PROXY accepts booleans, hop counts and address lists', async t => {
  t.equal(parseTrustProxy('false'), false)
  t.equal(parseTrustProxy('true'), true)
  t.equal(parseTrustProxy('2'), 2)
  t.same(parseTrustProxy('10.0.0.0/8, 127.0.0.1'), ['10.0.0.0/8', '127.0.0.1'])
})

t.test('the server refuses to start on a bad value: exit 1 and one clear line', async t => {
  const res = await runUntilExit(t, { MAX_CONNECTIONS_PER_CLIENT: '-3' })
  t.equal(res.code, 1)
  t.equal(res.stderr.trim(), 'Invalid configuration: MAX_CONNECTIONS_PER_CLIENT must be an integer >= 1 (got "-3")')
  t.equal(res.output, res.stderr, 'nothing else is printed')
})
