/** A frame whose turn has come: delivers it to the local subscribers. */
export type Delivery = () => void

export interface SequencerOptions {
  /** How long a gap may stay open before the missing frames are read from the store [500]. */
  gapMs?: number
  /** How long a gap the store cannot fill is waited for before the frames past it go on without it [10 x gapMs]. */
  giveUpMs?: number
  /** Frames held behind a gap at most; past it the gap is given up at once [10000]. */
  maxHeld?: number
  /** Told of every gap that was filled from the store or given up. */
  onGap?: (gap: { after: number, upTo: number, filled: number, skipped: number }) => void
}

/**
 * Delivers one ordered stream of a channel (a room's messages by offset, its
 * state by version) in order on this instance, whoever published each frame
 * and whichever way it came (published here, or from another instance through
 * the broker, which keeps each publisher's order but not the order between
 * publishers). A frame past a gap waits for the missing ones; if they have not
 * come after `gapMs`, `fill` reads them from the store (which holds every
 * frame below a held one: offsets are committed in order). Frames the store
 * no longer keeps are waited for until `giveUpMs`; then the stream goes on
 * without them, and one that still arrives is delivered late rather than
 * dropped. A frame already delivered is dropped.
 */
export class Sequencer {
  private readonly held = new Map<number, Delivery>()
  private timer: NodeJS.Timeout | null = null
  private filling = false
  /** When the current gap opened (0: none). */
  private gapSince = 0
  /** Numbers the stream went on without: delivered late if they still come. */
  private readonly skipped = new Set<number>()
  private readonly gapMs: number
  private readonly giveUpMs: number
  private readonly maxHeld: number

  constructor (
    /** The next number to deliver. */
    private next: number,
    private readonly fill: (after: number, upTo: number) => Promise<Array<[number, Delivery]>>,
    private readonly opts: SequencerOptions = {}
  ) {
    this.gapMs = opts.gapMs ?? 500
    this.giveUpMs = opts.giveUpMs ?? this.gapMs * 10
    this.maxHeld = opts.maxHeld ?? 10000
  }

  /** The number the stream expects next. */
  get expected (): number {
    return this.next
  }

  /** Frames waiting for a gap to fill. */
  get waiting (): number {
    return this.held.size
  }

  offer (seq: number, deliver: Delivery): void {
    if (seq < this.next) {
      if (this.skipped.delete(seq)) deliver()
      return
    }
    if (this.held.has(seq)) return
    if (seq !== this.next) {
      this.held.set(seq, deliver)
      if (this.gapSince === 0) this.gapSince = Date.now()
      if (this.held.size > this.maxHeld) this.giveUp()
      else this.armGapTimer()
      return
    }
    deliver()
    this.next = seq + 1
    this.drain()
  }

  stop (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.held.clear()
    this.skipped.clear()
  }

  private drain (): void {
    for (let deliver = this.held.get(this.next); deliver !== undefined; deliver = this.held.get(this.next)) {
      this.held.delete(this.next)
      deliver()
      this.next++
    }
    if (this.held.size === 0) {
      this.gapSince = 0
      if (this.timer !== null) clearTimeout(this.timer)
      this.timer = null
    }
  }

  private armGapTimer (): void {
    if (this.timer !== null || this.filling) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.fillGap()
    }, this.gapMs)
    this.timer.unref()
  }

  private fillGap (): void {
    if (this.held.size === 0) return
    const after = this.next - 1
    const upTo = Math.min(...this.held.keys()) - 1
    this.filling = true
    let filled = 0
    this.fill(after, upTo).then(found => {
      for (const [seq, deliver] of found.sort((a, b) => a[0] - b[0])) {
        if (seq !== this.next || seq > upTo) continue
        deliver()
        this.next++
        filled++
      }
    }, () => {}).finally(() => {
      this.filling = false
      this.drain()
      if (filled > 0) this.opts.onGap?.({ after, upTo, filled, skipped: 0 })
      if (this.held.size === 0) return
      if (Date.now() - this.gapSince >= this.giveUpMs) this.giveUp()
      else this.armGapTimer()
    })
  }

  /** Goes on past the gap: the frames still missing are delivered late if they come. */
  private giveUp (): void {
    if (this.held.size === 0) return
    const after = this.next - 1
    const first = Math.min(...this.held.keys())
    for (let seq = this.next; seq < first; seq++) {
      // bounded: a stream that loses more than it can remember stops waiting for the oldest
      if (this.skipped.size >= this.maxHeld) this.skipped.delete(this.skipped.values().next().value as number)
      this.skipped.add(seq)
    }
    this.opts.onGap?.({ after, upTo: first - 1, filled: 0, skipped: first - this.next })
    this.next = first
    this.gapSince = 0
    this.drain()
    if (this.held.size > 0) {
      this.gapSince = Date.now()
      this.armGapTimer()
    }
  }
}
