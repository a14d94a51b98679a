/**
 * Baseline C: Socket.IO 4.8 doing the same job (websocket transport only,
 * rooms, acks by callback). A direct message goes to the room named after
 * the recipient's client id, as Socket.IO users address users.
 */
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import { Server } from 'socket.io'
import { announce } from './control.js'

const http = createServer()
const io = new Server(http, { transports: ['websocket'], perMessageDeflate: false, httpCompression: false, serveClient: false, maxHttpBufferSize: 65536 })
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

http.listen(0, '127.0.0.1', () => {
  const address = http.address()
  announce(typeof address === 'object' && address ? address.port : 0, async () => { io.close() })
})
