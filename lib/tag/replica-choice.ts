/**
 * Which replicas may serve a read: healthy, following the leader, not yet
 * tried for this statement and, for a session, replayed past its position.
 * Among those with room, the balancing policy picks; a session read may
 * wait up to sessionWait for a replica to catch up.
 */
import type { Picker } from './balance.ts'
import { CHECK_TIMEOUT } from './failures.ts'
import { withTimeout } from './health.ts'
import { maxLsn, parseLsn } from './lsn.ts'
import type { ClusterNode } from './node.ts'
import type { NormalizedOptions } from './options.ts'

export const REPLICA_POSITION = 'select pg_last_wal_replay_lsn()::text as lsn'

export class ReplicaChoice {
  readonly #nodes: ClusterNode[]
  readonly #leader: () => ClusterNode
  readonly #options: NormalizedOptions
  readonly #pick: Picker
  /** Reused by pickWithRoom: picking allocates nothing per statement. */
  readonly #candidates: ClusterNode[] = []

  constructor(nodes: ClusterNode[], leader: () => ClusterNode, options: NormalizedOptions, pick: Picker) {
    this.#nodes = nodes
    this.#leader = leader
    this.#options = options
    this.#pick = pick
  }

  /** Healthy replicas not yet tried for this statement. */
  candidates(tried: readonly ClusterNode[]): ClusterNode[] {
    return this.#nodes.filter((node) => this.isCandidate(node, tried))
  }

  isCandidate(node: ClusterNode, tried: readonly ClusterNode[]): boolean {
    return node !== this.#leader() && node.inRecovery !== false && node.available && !tried.includes(node)
  }

  hasCandidate(tried: readonly ClusterNode[]): boolean {
    return this.#nodes.some((node) => this.isCandidate(node, tried))
  }

  mayRead(node: ClusterNode, position: bigint | null, tried: readonly ClusterNode[]): boolean {
    return this.isCandidate(node, tried) && (position === null || (node.replayLsn !== null && node.replayLsn >= position))
  }

  hasEligible(position: bigint | null, tried: readonly ClusterNode[]): boolean {
    return this.#nodes.some((node) => this.mayRead(node, position, tried))
  }

  /** Among eligible replicas with room for one more statement (an idle lane, or one more may open), the policy's choice. */
  pickWithRoom(position: bigint | null, tried: readonly ClusterNode[]): ClusterNode | null {
    const candidates = this.#candidates
    let i = 0
    for (const node of this.#nodes) {
      if ((node.lanes.hasRoom(false) || node.lanes.canOpen(false)) && this.mayRead(node, position, tried)) candidates[i++] = node
    }
    // Setting an array's length is a runtime call: only when the count changed.
    if (candidates.length !== i) candidates.length = i
    return i === 0 ? null : i === 1 ? candidates[0] : this.#pick(candidates)
  }

  /** A causal read waits up to sessionWait for a replica to replay its position; true once one has. */
  async waitForReplay(position: bigint, tried: readonly ClusterNode[]): Promise<boolean> {
    const deadline = Date.now() + this.#options.sessionWait
    // Replay usually catches up within a millisecond or two: ask again soon, then every 5 ms.
    for (let pause = 1;; pause = Math.min(5, pause * 2)) {
      const candidates = this.candidates(tried)
      if (candidates.length === 0) return false
      await Promise.all(candidates.map((node) => this.#refreshReplay(node, Math.max(1, deadline - Date.now()))))
      if (this.hasEligible(position, tried)) return true
      const left = deadline - Date.now()
      if (left <= 0) return false
      await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)))
    }
  }

  /** Asks a replica for its replay position; concurrent askers share one query. */
  #refreshReplay(node: ClusterNode, timeoutMs: number): Promise<void> {
    node.refreshing ??= withTimeout(node.monitor.unsafe(REPLICA_POSITION), Math.max(timeoutMs, 50), node.name, CHECK_TIMEOUT)
      .then(([row]) => void (node.replayLsn = maxLsn(node.replayLsn, parseLsn(row.lsn))))
      .catch(() => {})
      .finally(() => (node.refreshing = null))
    return node.refreshing
  }
}
