import t from 'tap'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { HocuspocusProvider } from '@hocuspocus/provider'
import { freePort, startServer } from './support/process.js'
import { tempDir, waitFor } from './support/helper.js'
import { converged, stateOf, synced, syncedPair, yEditor } from './support/yjs-editors.js'

// Compaction far away: the reloads below read the tail of appended updates.
const env = (port: number, dataDir: string) => ({ PORT: String(port), DATA_DIR: dataDir, YJS_COMPACT_AFTER_UPDATES: '10000', SHUTDOWN_GRACE_MS: '5000' })

t.test('kill -9 loses nothing that was relayed; a graceful restart makes the providers reconnect and merge offline edits', async t => {
  const port = await freePort()
  const dataDir = tempDir(t)
  let server = await startServer(t, env(port, dataDir))

  const [a, b] = await syncedPair(t, server.url, 'crash/doc')
  for (let i = 0; i < 20; i++) {
    a.text.insert(a.text.length, `a${i}`)
    b.map.set(`b${i}`, { i })
    if (i % 5 === 0) b.text.insert(0, `b${i}`)
  }
  a.text.delete(2, 4)
  // what the other editor received was committed before it was relayed
  await converged([a, b], 'the editors to converge before the crash')
  const beforeCrash = stateOf(a.doc)
  a.provider.destroy()
  b.provider.destroy()
  server.proc.kill('SIGKILL')
  t.match(await server.exited, { signal: 'SIGKILL' })

  server = await startServer(t, env(port, dataDir))
  const c = yEditor(t, server.url, 'crash/doc')
  await synced(c)
  t.ok(stateOf(c.doc).equals(beforeCrash), 'after kill -9 the server has every relayed update, byte for byte')

  // graceful restart with two live editors, one of which keeps typing while the server is down
  const d = yEditor(t, server.url, 'crash/doc')
  await synced(d)
  const hdoc = new Y.Doc()
  const h = new HocuspocusProvider({ url: `${server.wsUrl.replace(/\/ws$/, '')}/collab`, name: 'crash/doc', document: hdoc, ...({ WebSocketPolyfill: WebSocket } as any) })
  t.teardown(() => h.destroy())
  await waitFor(() => h.synced, 'the Hocuspocus editor to sync', 15000)
  await converged([c, d, { doc: hdoc }])
  c.text.insert(0, 'c-online ')
  await converged([c, d])
  const closedCodes: number[] = []
  let connectedDuringShutdown = false
  d.provider.on('connection-close', (event: { code: number } | null) => { if (event) closedCodes.push(event.code) })
  d.provider.on('status', ({ status }: { status: string }) => { if (status === 'connected') connectedDuringShutdown = true })
  server.proc.kill('SIGTERM')
  t.match(await server.exited, { code: 0 })
  t.equal(closedCodes[0], 1012, 'told to reconnect (1012 Service Restart)')
  // the provider retries 200 ms later; while the server is still closing, that
  // attempt is refused before any upgrade (1006, no close frame): never let back in
  t.notOk(connectedDuringShutdown, 'no reconnect was accepted while the server shut down')
  t.same(closedCodes.slice(1), closedCodes.slice(1).map(() => 1006), `every later close is a refused reconnect attempt: ${closedCodes.join(', ')}`)
  d.text.insert(d.text.length, ' d-offline')
  d.map.set('offline', true)
  c.map.set('offline', false)
  hdoc.getText('t').insert(0, 'h-offline ')

  server = await startServer(t, env(port, dataDir))
  await converged([c, d, { doc: hdoc }], 'both kinds of providers to reconnect by themselves and merge', 40000)
  t.match(c.text.toString(), /h-offline /)
  t.match(c.text.toString(), /c-online /)
  t.match(c.text.toString(), / d-offline$/)
  const e = yEditor(t, server.url, 'crash/doc')
  await synced(e)
  await converged([c, d, e, { doc: hdoc }], 'a new editor to get the merged document from the server')
})
