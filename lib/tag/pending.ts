/**
 * Statements on the wire and not yet answered, for the router's one
 * sweeper, which gives up on those that waited too long. A table of
 * reusable slots cleared as soon as a statement settles, and no clock read
 * per statement: a statement records how many sweeps had run when it came,
 * so its wait is known to within one sweep and never overstated. Why it is
 * built this way: BENCHMARKS.md, "What the profiling found and fixed".
 */
import type { ClusterNode } from './node.ts'

const INITIAL_SLOTS = 256

export class PendingStatements<T extends object> {
  #attempts: (T | null)[] = new Array(INITIAL_SLOTS).fill(null)
  #nodes: (ClusterNode | null)[] = new Array(INITIAL_SLOTS).fill(null)
  /** The number of sweeps that had run when the statement came. */
  #cameAfterSweep = new Int32Array(INITIAL_SLOTS)
  /** 1 for a replica read (bounded by readTimeout once sent), 0 otherwise. */
  #replicaRead = new Uint8Array(INITIAL_SLOTS)
  /** Slots not in use, as a stack of indexes; `#free` of them are valid. */
  #freeSlots = Int32Array.from({ length: INITIAL_SLOTS }, (_, i) => INITIAL_SLOTS - 1 - i)
  #free = INITIAL_SLOTS
  /** One past the highest slot ever used: the sweeper looks no further. */
  #highWater = 0

  #sweeps = 0
  /** When sweep n ran, at [n % length], for the last `length` sweeps. */
  readonly #sweepTimes: Float64Array

  /** `keepSweeps`: how many sweep times to keep; enough to span the longest timeout, else timeouts fire later. */
  constructor(keepSweeps = 64) {
    this.#sweepTimes = new Float64Array(Math.max(2, keepSweeps))
  }

  /** Registers a statement sent now; returns its slot, for `remove`. */
  add(attempt: T, node: ClusterNode, replicaRead: boolean): number {
    if (this.#free === 0) this.#grow()
    const slot = this.#freeSlots[--this.#free]
    this.#attempts[slot] = attempt
    this.#nodes[slot] = node
    this.#cameAfterSweep[slot] = this.#sweeps
    this.#replicaRead[slot] = replicaRead ? 1 : 0
    if (slot >= this.#highWater) this.#highWater = slot + 1
    return slot
  }

  /** Forgets a settled statement: its slot no longer keeps it (or its result) reachable. */
  remove(slot: number): void {
    if (this.#attempts[slot] === null) return
    this.#attempts[slot] = null
    this.#nodes[slot] = null
    this.#freeSlots[this.#free++] = slot
  }

  /**
   * Records a sweep at `now`, then calls `visit` for every statement still
   * pending with how long it has waited at least (it may `remove` the one it visits).
   */
  sweep(now: number, visit: (attempt: T, node: ClusterNode, waitedAtLeast: number, replicaRead: boolean) => void): void {
    const kept = this.#sweepTimes.length
    this.#sweeps++
    this.#sweepTimes[this.#sweeps % kept] = now
    const oldestKept = Math.max(1, this.#sweeps - kept + 1)
    for (let slot = 0; slot < this.#highWater; slot++) {
      const attempt = this.#attempts[slot]
      if (attempt === null) continue
      // It came after sweep k, so it has waited at least since sweep k + 1 (or the oldest kept, which is later).
      const since = Math.max(this.#cameAfterSweep[slot] + 1, oldestKept)
      visit(attempt, this.#nodes[slot]!, now - this.#sweepTimes[since % kept], this.#replicaRead[slot] === 1)
    }
  }

  get size(): number {
    return this.#attempts.length - this.#free
  }

  #grow(): void {
    const before = this.#attempts.length
    const after = before * 2
    this.#attempts = this.#attempts.concat(new Array(before).fill(null))
    this.#nodes = this.#nodes.concat(new Array(before).fill(null))
    const cameAfterSweep = new Int32Array(after)
    cameAfterSweep.set(this.#cameAfterSweep)
    this.#cameAfterSweep = cameAfterSweep
    const replicaRead = new Uint8Array(after)
    replicaRead.set(this.#replicaRead)
    this.#replicaRead = replicaRead
    const freeSlots = new Int32Array(after)
    for (let i = 0; i < before; i++) freeSlots[i] = after - 1 - i
    this.#freeSlots = freeSlots
    this.#free = before
  }
}
