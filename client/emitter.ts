type Listener<V> = (value: V) => void

/** A small typed event emitter that runs the same in browsers and Node. */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>()

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events> (event: K, fn: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event)
    if (!set) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(fn as Listener<never>)
    return () => this.off(event, fn)
  }

  once<K extends keyof Events> (event: K, fn: Listener<Events[K]>): () => void {
    const off = this.on(event, value => {
      off()
      fn(value)
    })
    return off
  }

  off<K extends keyof Events> (event: K, fn: Listener<Events[K]>): void {
    this.listeners.get(event)?.delete(fn as Listener<never>)
  }

  protected emit<K extends keyof Events> (event: K, value: Events[K]): void {
    const set = this.listeners.get(event)
    if (!set) return
    for (const fn of [...set]) {
      try {
        (fn as Listener<Events[K]>)(value)
      } catch (err) {
        // A throwing listener must not corrupt the client's state; report it like an uncaught error.
        setTimeout(() => { throw err }, 0)
      }
    }
  }
}
