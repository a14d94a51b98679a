import { framePayload, type StreamEncoder } from '../engine/http-stream.js'
import { formatEventId, type RoomPosition } from './event-id.js'

/** What the codec reads of a /ws frame: its type, and for room frames the fields that move a position. */
interface Parsed {
  type: string
  room?: string
  offset?: number
  epoch?: string
  recovered?: boolean
  reconnectAfterMs?: number
  /** The frame's JSON text, as /ws sends it. */
  json: string
}

/**
 * The last frame parsed: a broadcast hands the same frame Buffer to every
 * member, so the JSON is parsed once per broadcast, not once per stream.
 */
let lastFrame: Buffer | null = null
let lastParsed: Parsed | null = null

function parse (frame: Buffer): Parsed | null {
  if (frame === lastFrame) return lastParsed
  const json = framePayload(frame).toString()
  let parsed: Parsed | null = null
  try {
    const m = JSON.parse(json) as Record<string, unknown>
    if (typeof m.type === 'string') {
      parsed = { type: m.type, json }
      if (typeof m.room === 'string') parsed.room = m.room
      if (typeof m.offset === 'number') parsed.offset = m.offset
      if (typeof m.epoch === 'string') parsed.epoch = m.epoch
      if (typeof m.recovered === 'boolean') parsed.recovered = m.recovered
      if (typeof m.reconnectAfterMs === 'number') parsed.reconnectAfterMs = m.reconnectAfterMs
    }
  } catch {}
  lastFrame = frame
  lastParsed = parsed
  return parsed
}

/** One event of a stream: its id, its name and its data (a /ws frame's JSON). */
export interface StreamEvent { id: string, event: string, data: string, retry?: number }

/**
 * Where one stream is in each of its rooms, moved by the events it writes, in
 * the order it writes them: so the id of an event says exactly what the
 * client had received once it got that event.
 *
 * - `joined` (a room joined at the open, with `missed` and `recovered` as /ws
 *   sends them) sets the room's position to the joined offset; when the client
 *   had a position there and the room could not be recovered from it (another
 *   epoch, or messages no longer in the history), the event is named `reset`.
 * - `room_message` moves the room's position to its offset (and epoch); one at
 *   or before the position in the same epoch was delivered already and is dropped.
 */
export class RoomCursor {
  private id: string

  constructor (private readonly positions: Map<string, RoomPosition>, private readonly resumed: ReadonlySet<string>) {
    this.id = formatEventId(positions)
  }

  /** The event a frame becomes on this stream, or null when it is dropped. */
  event (frame: Buffer): StreamEvent | null {
    const m = parse(frame)
    if (m === null) return null
    let name = m.type
    if (m.room !== undefined && (m.type === 'room_message' || m.type === 'joined')) {
      const room = m.room
      const at = this.positions.get(room)
      const epoch = m.epoch ?? at?.epoch ?? ''
      const offset = m.offset ?? 0
      if (m.type === 'room_message') {
        if (at !== undefined && at.epoch === epoch && offset <= at.offset) return null
      } else if (m.recovered === false && this.resumed.has(room)) {
        name = 'reset'
      }
      if (at === undefined || at.epoch !== epoch || at.offset !== offset) {
        this.positions.set(room, { epoch, offset })
        this.id = formatEventId(this.positions)
      }
    }
    const event: StreamEvent = { id: this.id, event: name, data: m.json }
    if (m.type === 'server_shutdown' && m.reconnectAfterMs !== undefined) event.retry = m.reconnectAfterMs
    return event
  }
}

/** `text/event-stream`: `id:`, `event:` and `data:` lines (data split at any newline), a blank line after each event; comments keep it alive. */
export class SseEncoder implements StreamEncoder {
  readonly contentType = 'text/event-stream; charset=utf-8'
  readonly keepalive = ':\n\n'

  constructor (private readonly cursor: RoomCursor) {}

  encode (frame: Buffer): string | null {
    const e = this.cursor.event(frame)
    if (e === null) return null
    const data = e.data.includes('\n') ? e.data.split(/\r?\n/).join('\ndata: ') : e.data
    // EventSource fires `error` for its own connection failures: an error frame is named `stream_error` here
    const name = e.event === 'error' ? 'stream_error' : e.event
    return (e.retry === undefined ? '' : `retry: ${e.retry}\n`) + 'id: ' + e.id + '\nevent: ' + name + '\ndata: ' + data + '\n\n'
  }
}

/** NDJSON: one `{"id","event","data"}` object a line; empty lines keep it alive. */
export class NdjsonEncoder implements StreamEncoder {
  readonly contentType = 'application/x-ndjson; charset=utf-8'
  readonly keepalive = '\n'

  constructor (private readonly cursor: RoomCursor) {}

  encode (frame: Buffer): string | null {
    const e = this.cursor.event(frame)
    if (e === null) return null
    // JSON text has no raw newline: the frame's JSON goes in as it is
    return '{"id":' + JSON.stringify(e.id) + ',"event":' + JSON.stringify(e.event) + ',"data":' + e.data + '}\n'
  }
}
