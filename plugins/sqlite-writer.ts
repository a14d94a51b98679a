/**
 * The SQLite store's writer thread. Every commit ends in an fsync
 * (synchronous=FULL); run on the main thread, that wait would stall every
 * connection of the process. Here the main thread keeps serving (and queueing
 * the next batch) while this thread commits one batch in one transaction and
 * answers with the results, in order.
 */
import Database from 'better-sqlite3'
import { parentPort, workerData } from 'node:worker_threads'

/** One write of a batch, as plain data (it crosses threads). */
export type WriteOp =
  | { kind: 'message', room: string, offset: number, messageId: string, from: string, data: string, timestamp: string, historySize: number }
  /** A state change: its room row (saved with the batch) is the whole write. */
  | { kind: 'state' }
  | { kind: 'inbox_push', clientId: string, message: string, expiresAt: number, max: number }
  | { kind: 'inbox_drain', clientId: string, now: number }
  | { kind: 'inbox_expire', now: number }

/** A room row as the batch leaves it: room, state JSON, version, offset. */
export type RoomRow = [string, string, number, number]

export type WriterRequest =
  | { type: 'commit', id: number, ops: WriteOp[], rooms: RoomRow[], now: string }
  | { type: 'close' }

export type WriterReply =
  | { type: 'ready' }
  | { type: 'committed', id: number, results: unknown[], seconds: number }
  | { type: 'failed', id: number, message: string }
  | { type: 'closed' }

export interface WriterData { file: string }

function serve (port: NonNullable<typeof parentPort>, { file }: WriterData): void {
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  db.pragma('busy_timeout = 5000')
  const s = {
    saveRoom: db.prepare(`INSERT INTO rooms (room, state, version, "offset", updated_at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (room) DO UPDATE SET state = excluded.state, version = excluded.version, "offset" = excluded."offset", updated_at = excluded.updated_at`),
    addMessage: db.prepare('INSERT INTO room_messages (room, "offset", message_id, sender, data, timestamp) VALUES (?, ?, ?, ?, ?, ?)'),
    trimMessages: db.prepare('DELETE FROM room_messages WHERE room = ? AND "offset" <= ?'),
    inboxPush: db.prepare('INSERT INTO inbox (client_id, message, expires_at) VALUES (?, ?, ?)'),
    inboxTrim: db.prepare('DELETE FROM inbox WHERE client_id = ? AND id NOT IN (SELECT id FROM inbox WHERE client_id = ? ORDER BY id DESC LIMIT ?)'),
    inboxRead: db.prepare<[string, number], { message: string }>('SELECT message FROM inbox WHERE client_id = ? AND expires_at > ? ORDER BY id'),
    inboxClear: db.prepare('DELETE FROM inbox WHERE client_id = ?'),
    inboxExpire: db.prepare('DELETE FROM inbox WHERE expires_at <= ?')
  }

  const run = (op: WriteOp): unknown => {
    switch (op.kind) {
      case 'message':
        if (op.historySize > 0) s.addMessage.run(op.room, op.offset, op.messageId, op.from, op.data, op.timestamp)
        s.trimMessages.run(op.room, op.offset - op.historySize)
        return null
      case 'state':
        return null
      case 'inbox_push':
        s.inboxPush.run(op.clientId, op.message, op.expiresAt)
        s.inboxTrim.run(op.clientId, op.clientId, op.max)
        return null
      case 'inbox_drain': {
        const rows = s.inboxRead.all(op.clientId, op.now).map(row => row.message)
        s.inboxClear.run(op.clientId)
        return rows
      }
      case 'inbox_expire':
        return s.inboxExpire.run(op.now).changes
    }
  }

  const commit = db.transaction((ops: WriteOp[], rooms: RoomRow[], now: string) => {
    const results = ops.map(run)
    for (const [room, state, version, offset] of rooms) s.saveRoom.run(room, state, version, offset, now)
    return results
  })

  port.on('message', (req: WriterRequest) => {
    if (req.type === 'close') {
      db.close()
      port.postMessage({ type: 'closed' } satisfies WriterReply)
      port.close()
      return
    }
    const started = process.hrtime.bigint()
    try {
      const results = commit(req.ops, req.rooms, req.now)
      port.postMessage({ type: 'committed', id: req.id, results, seconds: Number(process.hrtime.bigint() - started) / 1e9 } satisfies WriterReply)
    } catch (err) {
      port.postMessage({ type: 'failed', id: req.id, message: (err as Error).message } satisfies WriterReply)
    }
  })
  port.postMessage({ type: 'ready' } satisfies WriterReply)
}

if (parentPort) serve(parentPort, workerData as WriterData)
