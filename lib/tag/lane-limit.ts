/**
 * How many lanes a replica's reads get, found by measuring. On a saturated
 * server more connections do not give more reads/s: each backend competes
 * for the same cores, and reads pipelined on fewer connections cost less CPU
 * on both ends (BENCHMARKS.md, "Lanes per replica"). On a server with idle
 * cores one more backend does give more. So a replica starts with a few
 * lanes and, while its reads keep them busy, tries one more (or one fewer):
 * a trial alternates windows at the old and the new count, so that what
 * else the machine does weighs on both alike, and keeps the new count only
 * when the median of the paired ratios says it serves more (or as much with
 * fewer). A pure decision over counts, tested as a table.
 */

/** Lanes a replica starts with. */
export const START_LANES = 2
/** Windows at the new count per trial (each between two at the old count). */
export const TRIAL_PAIRS = 3
/** One more lane is kept when it serves this much more. */
const GAIN = 0.05
/** One fewer is kept when it serves at most this much less. */
const LOSS = 0.02
/** Windows to wait after a trial that did not pay, doubling up to this many. */
const MAX_COOLDOWN = 64

export class LaneLimit {
  /** Lanes reads may use in the coming window. */
  current: number
  readonly max: number
  /** The count being kept; `current` differs from it only in a trial's windows at the new count. */
  #settled: number
  #trial: { direction: 1 | -1; windows: number[] } | null = null
  #nextDirection: 1 | -1 = 1
  #cooldown = 1
  #waitWindows = 0

  constructor(max: number, start = START_LANES) {
    this.max = max
    this.current = this.#settled = Math.min(start, max)
  }

  /** The count kept (a trial's windows at the new count aside). */
  get kept(): number {
    return this.#settled
  }

  get inTrial(): boolean {
    return this.#trial !== null
  }

  /**
   * One window's measurement: reads the replica completed, and whether reads
   * waited for its lanes all along (more demand than they took). `mayStart`:
   * no other replica is in a trial.
   */
  observe(completed: number, saturated: boolean, mayStart: boolean): void {
    if (this.#waitWindows > 0) this.#waitWindows--
    const trial = this.#trial
    if (trial) {
      // A window without demand says nothing about the new count: the trial ends, nothing changes.
      if (!saturated || completed === 0) return this.#end(false)
      trial.windows.push(completed)
      if (trial.windows.length < 2 * TRIAL_PAIRS + 1) {
        this.current = trial.windows.length % 2 === 1 ? this.#settled + trial.direction : this.#settled
        return
      }
      // Each window at the new count against the mean of the windows either side of it: a trend in the load
      // (a warming JIT, another process starting) weighs on both sides alike.
      const ratios = []
      for (let i = 1; i < trial.windows.length; i += 2) ratios.push((2 * trial.windows[i]) / (trial.windows[i - 1] + trial.windows[i + 1]))
      const median = ratios.sort((a, b) => a - b)[Math.floor(ratios.length / 2)]
      return this.#end(trial.direction === 1 ? median >= 1 + GAIN : median >= 1 - LOSS)
    }
    if (!mayStart || this.#waitWindows > 0 || !saturated || completed === 0) return
    let direction = this.#nextDirection
    if (!this.#fits(direction)) direction = direction === 1 ? -1 : 1
    if (!this.#fits(direction)) return
    // This window was at the settled count: it is the trial's first.
    this.#trial = { direction, windows: [completed] }
    this.current = this.#settled + direction
  }

  #fits(direction: 1 | -1): boolean {
    const next = this.#settled + direction
    return next >= 1 && next <= this.max
  }

  #end(kept: boolean): void {
    const direction = this.#trial!.direction
    this.#trial = null
    if (kept) {
      this.#settled += direction
      this.#cooldown = 1
      this.#nextDirection = direction
    } else {
      this.#waitWindows = this.#cooldown
      this.#cooldown = Math.min(2 * this.#cooldown, MAX_COOLDOWN)
      this.#nextDirection = direction === 1 ? -1 : 1
    }
    this.current = this.#settled
  }
}
