/**
 * Statements handed to a pool and not yet answered, for the router's one
 * sweeper. A table of reusable slots rather than a Set of small objects:
 * at tens of thousands of statements a second, a Set (or a push/pop array)
 * of per-statement records kept finished statements and their results
 * reachable from old space, so V8 promoted them and ran a full mark-compact
 * every few hundred milliseconds (bench/routing-overhead.mjs: 23 major GCs
 * in 4 s against none for raw postgres.js). Here a finished statement's
 * slot is cleared at once and nothing is allocated per statement.
 */
import type { ClusterNode, PgQuery } from './node.ts'

const INITIAL_SLOTS = 256

export class PendingStatements {
  #attempts: (PgQuery | null)[] = new Array(INITIAL_SLOTS).fill(null)
  #nodes: (ClusterNode | null)[] = new Array(INITIAL_SLOTS).fill(null)
  #startedAt = new Float64Array(INITIAL_SLOTS)
  /** 1 for a replica read (bounded by readTimeout once sent), 0 otherwise. */
  #replicaRead = new Uint8Array(INITIAL_SLOTS)
  /** Slots not in use, as a stack of indexes; `#free` of them are valid. */
  #freeSlots = Int32Array.from({ length: INITIAL_SLOTS }, (_, i) => INITIAL_SLOTS - 1 - i)
  #free = INITIAL_SLOTS
  /** One past the highest slot ever used: the sweeper looks no further. */
  #highWater = 0

  /** Registers a statement sent now; returns its slot, for `remove`. */
  add(attempt: PgQuery, node: ClusterNode, replicaRead: boolean, now: number): number {
    if (this.#free === 0) this.#grow()
    const slot = this.#freeSlots[--this.#free]
    this.#attempts[slot] = attempt
    this.#nodes[slot] = node
    this.#startedAt[slot] = now
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

  /** Calls `visit` for every statement still pending (it may `remove` the one it visits). */
  forEach(visit: (attempt: PgQuery, node: ClusterNode, startedAt: number, replicaRead: boolean) => void): void {
    for (let slot = 0; slot < this.#highWater; slot++) {
      const attempt = this.#attempts[slot]
      if (attempt !== null) visit(attempt, this.#nodes[slot]!, this.#startedAt[slot], this.#replicaRead[slot] === 1)
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
    const startedAt = new Float64Array(after)
    startedAt.set(this.#startedAt)
    this.#startedAt = startedAt
    const replicaRead = new Uint8Array(after)
    replicaRead.set(this.#replicaRead)
    this.#replicaRead = replicaRead
    const freeSlots = new Int32Array(after)
    for (let i = 0; i < before; i++) freeSlots[i] = after - 1 - i
    this.#freeSlots = freeSlots
    this.#free = before
  }
}
