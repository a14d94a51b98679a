/**
 * Baseline C: Socket.IO 4.8 doing the same job (websocket transport only,
 * rooms, acks by callback). A direct message goes to the room named after
 * the recipient's client id, as Socket.IO users address users.
 * BENCH_REDIS_URL (S8): instances share rooms through @socket.io/redis-adapter
 * (its default, non-sharded adapter) on two ioredis connections, and count the
 * pub/sub messages their subscriber connection receives.
 */
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import { createAdapter } from '@socket.io/redis-adapter'
import { Redis } from 'ioredis'
import { Server } from 'socket.io'
import { announce, type ServerStats } from './control.js'

const http = createServer()
const io = new Server(http, { transports: ['websocket'], perMessageDeflate: false, httpCompression: false, serveClient: false, maxHttpBufferSize: 65536 })

const redisUrl = process.env.BENCH_REDIS_URL
const broker = redisUrl ? new Redis(redisUrl) : null
const subscriber = broker?.duplicate() ?? null
const pubsub = { received: 0, published: 0 }
if (broker && subscriber) {
  await Promise.all([broker, subscriber].map(c => new Promise<void>((resolve, reject) => {
    if (c.status === 'ready') return resolve()
    c.once('ready', resolve)
    c.once('error', reject)
  })))
  // the adapter listens on these two events of the subscriber (pattern: broadcasts; plain: requests between instances)
  subscriber.on('pmessageBuffer', () => { pubsub.received++ })
  subscriber.on('messageBuffer', () => { pubsub.received++ })
  const publish = broker.publish.bind(broker)
  broker.publish = ((...args: Parameters<typeof publish>) => { pubsub.published++; return publish(...args) }) as typeof broker.publish
  io.adapter(createAdapter(broker, subscriber))
}
const offsets = new Map<string, number>()
type Ack = ((reply: object) => void) | undefined

io.on('connection', socket => {
  const clientId = typeof socket.handshake.query.clientId === 'string' ? socket.handshake.query.clientId : socket.id
  socket.join(`client:${clientId}`)

  socket.on('join', (room: unknown, ack: Ack) => {
    if (typeof room !== 'string') return ack?.({ error: 'invalid_message' })
    socket.join(room)
    socket.to(room).emit('presence', { room, event: 'join', clientId })
    ack?.({ room, state: {}, version: 0, offset: offsets.get(room) ?? 0, members: [] })
  })

  socket.on('publish', (msg: { room: string, data: unknown }, ack: Ack) => {
    if (!socket.rooms.has(msg?.room)) return ack?.({ error: 'not_in_room' })
    const offset = (offsets.get(msg.room) ?? 0) + 1
    offsets.set(msg.room, offset)
    const messageId = randomUUID()
    io.to(msg.room).emit('room_message', { room: msg.room, offset, messageId, from: clientId, data: msg.data, timestamp: new Date().toISOString() })
    ack?.({ room: msg.room, offset, messageId })
  })

  socket.on('send', (msg: { to: string, text: string }, ack: Ack) => {
    const messageId = randomUUID()
    const target = `client:${msg?.to}`
    io.to(target).emit('message', { messageId, from: clientId, to: msg.to, text: msg.text, timestamp: new Date().toISOString() })
    ack?.({ messageId, delivered: io.sockets.adapter.rooms.get(target)?.size ?? 0, queued: false })
  })
})

io.of('/').adapter.on('delete-room', (room: string) => offsets.delete(room))

const stats = (): ServerStats => broker ? { pubsubMessages: pubsub.received, pubsubPublished: pubsub.published } : { pubsubMessages: null, pubsubPublished: null }

http.listen(0, '127.0.0.1', () => {
  const address = http.address()
  announce(typeof address === 'object' && address ? address.port : 0, async () => {
    io.close()
    broker?.disconnect()
    subscriber?.disconnect()
  }, stats)
})
