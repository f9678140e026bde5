/**
 * Statements waiting in the router for a free lane: a FIFO that never slows
 * down as it ages (the head index resets when the queue empties, and the
 * array is compacted once the consumed part dominates).
 */
export class Waiting<T> {
  #items: (T | undefined)[] = []
  #head = 0

  get length(): number {
    return this.#items.length - this.#head
  }

  push(item: T): void {
    this.#items.push(item)
  }

  /**
   * Removes and returns the first of the first `window` items that `fits`,
   * or undefined. Items skipped keep their place.
   */
  take(fits: (item: T) => boolean, window = 16): T | undefined {
    const end = Math.min(this.#items.length, this.#head + window)
    for (let i = this.#head; i < end; i++) {
      const item = this.#items[i] as T
      if (!fits(item)) continue
      if (i === this.#head) {
        this.#items[this.#head++] = undefined
        this.#compact()
      } else {
        this.#items.splice(i, 1)
      }
      return item
    }
    return undefined
  }

  /** Takes everything out (to route it again). */
  drain(): T[] {
    const items = this.#items.slice(this.#head) as T[]
    this.#items = []
    this.#head = 0
    return items
  }

  #compact(): void {
    if (this.#head === this.#items.length) {
      this.#items = []
      this.#head = 0
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
  }
}
