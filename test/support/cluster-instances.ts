import { startServer, type ServerProcess } from './process.js'
import { startRedis, type RedisServer } from './redis-server.js'
import { tempDir, type TestContext } from './helper.js'
import { TestClient } from './ws-client.js'

/** Environment every instance of a test cluster shares: limits far above what the tests send. */
export function clusterEnv (redis: RedisServer, extra: Record<string, string> = {}): Record<string, string> {
  return { ...redis.env, RATE_LIMIT_MAX: '100000', WS_MESSAGES_PER_SECOND: '1000', MAX_CONNECTIONS_PER_CLIENT: '1000', ...extra }
}

/** A private redis-server and `n` instances of the built server on it, each a child process. */
export async function cluster (t: TestContext, n: number, extra: Record<string, string> = {}): Promise<{ redis: RedisServer, instances: ServerProcess[] }> {
  const redis = await startRedis(t)
  const instances: ServerProcess[] = []
  // a generous start bound: these suites run under CPU hogs, where loading the server alone can pass 15 s
  for (let i = 0; i < n; i++) instances.push(await startServer(t, { ...clusterEnv(redis, extra), DATA_DIR: tempDir(t) }))
  return { redis, instances }
}

export async function connect (t: TestContext, wsUrl: string, clientId: string): Promise<TestClient> {
  const client = await TestClient.connect(wsUrl, { clientId })
  t.teardown(() => client.close())
  return client
}
