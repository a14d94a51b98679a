import t from 'tap'
import { cluster, clusterEnv } from './support/cluster-instances.js'
import { redisTestOptions } from './support/redis-server.js'
import { startServer } from './support/process.js'
import { tempDir, waitFor } from './support/helper.js'
import { converged, stateOf, synced, yEditor } from './support/yjs-editors.js'

t.test('two instances on Redis: editors on each converge byte for byte, awareness crosses, a later instance catches up from the store', redisTestOptions(), async t => {
  const { redis, instances: [one, two] } = await cluster(t, 2, { YJS_COMPACT_AFTER_UPDATES: '7', REDIS_INSTANCE_TTL_MS: '2000' })
  const a = yEditor(t, one.url, 'cluster/doc')
  const b = yEditor(t, two.url, 'cluster/doc')
  await synced(a)
  await synced(b)
  a.provider.awareness.setLocalStateField('user', 'a-on-one')
  for (let i = 0; i < 15; i++) {
    a.text.insert(a.text.length, `a${i} `)
    b.text.insert(0, `b${i} `)
    b.map.set(`k${i}`, i)
  }
  a.text.delete(0, 2)
  await converged([a, b], 'editors on two instances to converge')
  await waitFor(() => [...b.provider.awareness.getStates().values()].some(s => s.user === 'a-on-one'), 'a\'s awareness to reach b on the other instance')

  // an instance started now loads the document from Redis (snapshot + tail), compacted by both
  const three = await startServer(t, { ...clusterEnv(redis, { REDIS_INSTANCE_TTL_MS: '2000' }), DATA_DIR: tempDir(t) })
  const c = yEditor(t, three.url, 'cluster/doc')
  await synced(c)
  t.ok(stateOf(c.doc).equals(stateOf(a.doc)), 'the late instance serves the same document, byte for byte')
  // awareness is not stored: the late instance learns a's when a renews it (every 15 s), or now
  a.provider.awareness.setLocalStateField('user', 'a-on-one')
  a.provider.awareness.setLocalStateField('n', 2)
  await waitFor(() => [...c.provider.awareness.getStates().values()].some(s => s.user === 'a-on-one'), 'a\'s awareness to reach c on the late instance')
  c.map.set('from', 'three')
  await converged([a, b, c], 'an edit on the third instance to reach the others')
  t.equal(a.map.get('from'), 'three')

  // a's instance crashes: its awareness is removed for the others within the instance TTL (2 s here),
  // well before the 30 s after which the providers would drop it by themselves
  const crashed = Date.now()
  one.proc.kill('SIGKILL')
  await one.exited
  await waitFor(() => ![...b.provider.awareness.getStates().values()].some(s => s.user === 'a-on-one'), 'a\'s awareness to be removed on two', 15000, 50)
  await waitFor(() => ![...c.provider.awareness.getStates().values()].some(s => s.user === 'a-on-one'), 'a\'s awareness to be removed on three', 15000, 50)
  t.ok(Date.now() - crashed < 15000, `removed after ${Date.now() - crashed} ms`)
})
