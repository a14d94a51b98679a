/**
 * Baseline B: a bare `ws` server doing Switchboard's job with the same JSON
 * messages (join, publish, send, ping), rooms as Sets of sockets, every
 * broadcast serialized once. No validation, persistence, limits or logs: the
 * practical limit for Node.
 */
import { randomUUID } from 'node:crypto'
import { WebSocketServer, type WebSocket } from 'ws'
import { announce } from './control.js'

interface Room { members: Set<WebSocket>, offset: number }

const rooms = new Map<string, Room>()
const clients = new Map<string, Set<WebSocket>>()
const TEXT = { binary: false }

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, clientTracking: false, maxPayload: 65536 })

function broadcast (room: Room, message: object, except?: WebSocket): number {
  const frame = Buffer.from(JSON.stringify(message))
  let reached = 0
  for (const ws of room.members) {
    if (ws === except || ws.readyState !== 1) continue
    ws.send(frame, TEXT)
    reached++
  }
  return reached
}

wss.on('connection', (ws, req) => {
  const clientId = new URL(req.url ?? '/', 'http://localhost').searchParams.get('clientId') ?? `anon-${randomUUID()}`
  const joined = new Set<string>()
  let own = clients.get(clientId)
  if (!own) clients.set(clientId, own = new Set())
  own.add(ws)
  const reply = (message: object, id: unknown) => ws.send(JSON.stringify(id === undefined ? message : { ...message, id }))
  reply({ type: 'welcome', clientId, connectionId: randomUUID(), timestamp: new Date().toISOString() }, undefined)

  ws.on('message', data => {
    let msg: Record<string, any>
    try {
      msg = JSON.parse(data.toString())
    } catch {
      return reply({ type: 'error', code: 'invalid_message', message: 'the frame is not valid JSON' }, undefined)
    }
    switch (msg.type) {
      case 'ping':
        return reply({ type: 'pong', timestamp: new Date().toISOString() }, msg.id)
      case 'join': {
        if (typeof msg.room !== 'string') return reply({ type: 'error', code: 'invalid_message', message: 'room' }, msg.id)
        let room = rooms.get(msg.room)
        if (!room) rooms.set(msg.room, room = { members: new Set(), offset: 0 })
        room.members.add(ws)
        joined.add(msg.room)
        broadcast(room, { type: 'presence', room: msg.room, event: 'join', clientId }, ws)
        return reply({ type: 'joined', room: msg.room, state: {}, version: 0, offset: room.offset, members: [], missed: [], recovered: false }, msg.id)
      }
      case 'publish': {
        const room = rooms.get(msg.room)
        if (!room || !room.members.has(ws)) return reply({ type: 'error', code: 'not_in_room', message: 'join first' }, msg.id)
        const offset = ++room.offset
        const messageId = randomUUID()
        broadcast(room, { type: 'room_message', room: msg.room, offset, messageId, from: clientId, data: msg.data, timestamp: new Date().toISOString() })
        return reply({ type: 'ack', room: msg.room, offset, messageId }, msg.id)
      }
      case 'send': {
        const messageId = randomUUID()
        const frame = Buffer.from(JSON.stringify({ type: 'message', messageId, from: clientId, to: msg.to, text: msg.text, timestamp: new Date().toISOString() }))
        let delivered = 0
        for (const peer of clients.get(msg.to) ?? []) {
          if (peer.readyState !== 1) continue
          peer.send(frame, TEXT)
          delivered++
        }
        return reply({ type: 'ack', messageId, delivered, queued: false }, msg.id)
      }
      default:
        return reply({ type: 'error', code: 'unknown_type', message: 'unknown type' }, msg.id)
    }
  })

  ws.on('close', () => {
    own.delete(ws)
    if (own.size === 0) clients.delete(clientId)
    for (const name of joined) {
      const room = rooms.get(name)
      if (!room) continue
      room.members.delete(ws)
      if (room.members.size === 0) rooms.delete(name)
    }
  })
  ws.on('error', () => {})
})

wss.on('listening', () => {
  const address = wss.address()
  announce(typeof address === 'object' && address ? address.port : 0, async () => { wss.close() })
})
