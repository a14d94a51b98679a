import { once } from 'node:events'
import WebSocket, { WebSocketServer } from 'ws'
import type { TestContext } from './helper.js'

export interface SocketPair {
  /** The server side, as a plugin receives it. */
  server: WebSocket
  /** The peer: what it received, parsed. */
  client: WebSocket
  received: Array<Record<string, any>>
  /** Resolves with the next message of `type` the peer receives (or already received and not taken). */
  next: (type: string) => Promise<Record<string, any>>
}

/**
 * A real WebSocket connection on 127.0.0.1 for the plain classes' tests: the
 * server side is what a Session wraps, the client side records what arrives.
 */
export async function socketPair (t: TestContext): Promise<SocketPair> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(wss, 'listening')
  const address = wss.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const serverSide = once(wss, 'connection') as Promise<[WebSocket]>
  const client = new WebSocket(`ws://127.0.0.1:${port}`)
  const received: Array<Record<string, any>> = []
  const waiters: Array<{ type: string, resolve: (m: Record<string, any>) => void }> = []
  const taken = new Set<Record<string, any>>()
  client.on('message', data => {
    const msg = JSON.parse(data.toString()) as Record<string, any>
    received.push(msg)
    const i = waiters.findIndex(w => w.type === msg.type)
    if (i >= 0) {
      taken.add(msg)
      waiters.splice(i, 1)[0].resolve(msg)
    }
  })
  const [[server]] = await Promise.all([serverSide, once(client, 'open')])
  t.teardown(async () => {
    client.terminate()
    server.terminate()
    await new Promise(resolve => wss.close(resolve))
  })
  return {
    server,
    client,
    received,
    next: type => {
      const ready = received.find(m => m.type === type && !taken.has(m))
      if (ready) {
        taken.add(ready)
        return Promise.resolve(ready)
      }
      return new Promise(resolve => waiters.push({ type, resolve }))
    }
  }
}
