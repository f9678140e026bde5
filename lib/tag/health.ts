/**
 * The background monitor: every interval it asks each node where it stands
 * and whom it follows (one query, NODE_POSITION), keeps replicas that do not
 * follow the leader out of the reads (lib/tag/follow.ts), derives each
 * replica's lag in bytes and in time, retires replicas beyond maxLag and
 * restores them below half of it, bans nodes that do not answer, and
 * notices a new leader. Its timer is unref'd: it never keeps a process
 * alive on its own.
 */
import { type FollowVerdict, judgeFollowing, judgeWithoutLeader, leaderView, replicaView } from './follow.ts'
import { CHECK_TIMEOUT } from './failures.ts'
import { lsnDistance, maxLsn, parseLsn } from './lsn.ts'
import type { ClusterNode } from './node.ts'
import type { NormalizedOptions } from './options.ts'
import { PatroniFollower } from './patroni.ts'
import { LEADER_LSN, NODE_POSITION } from './queries.ts'

/** What the monitor needs from the router: the nodes, the leader, and where to report. */
export interface MonitoredCluster {
  readonly nodes: ClusterNode[]
  readonly options: NormalizedOptions
  leader: ClusterNode
  readonly leaderUsable: boolean
  electLeader(writable: ClusterNode[]): void
  /** A node Patroni lists that the descriptor did not: it joins at run time. */
  addNode(url: string, name?: string): ClusterNode
  nodeFailed(node: ClusterNode, error: unknown): void
  nodeAnswered(node: ClusterNode): void
  emit(event: string, payload: unknown): boolean
}

/** What one monitor round learned of the leader, against which each replica is judged. */
interface RoundFacts {
  leader: ClusterNode
  leaderRow: Record<string, any> | null
  leaderLsn: bigint | null
  leaderLsnAfterReplicas: bigint | null
  /** The system identifier of the cluster (the leader's, as known before this round's election). */
  clusterId: string | null
  now: number
}

interface LeaderSample {
  lsn: bigint
  at: number
}

/** Rejects after `ms` unless the promise settles first; `code` names the purpose of the timeout. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string, code = CHECK_TIMEOUT): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${what} did not answer within ${ms} ms`), { code })), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export class Monitor {
  readonly #cluster: MonitoredCluster
  /** Leader positions over time: how long ago the leader passed a replica's position is its lag. */
  #history: LeaderSample[] = []
  #timer: ReturnType<typeof setInterval> | null = null
  #ticking: Promise<void> | null = null
  /** Set when the cluster has Patroni endpoints: the topology then comes from Patroni too. */
  readonly patroni: PatroniFollower | null
  #starting: Promise<void> | null = null

  constructor(cluster: MonitoredCluster) {
    this.#cluster = cluster
    this.patroni = cluster.options.patroni.length > 0 ? new PatroniFollower(cluster) : null
  }

  start(): void {
    const interval = this.#cluster.options.monitorInterval
    this.#timer = setInterval(() => void this.tick(), interval)
    unrefTimer(this.#timer)
    // A first look right away: reads wait for it (see `starting`), so it must not wait for a timer.
    // They wait one check's timeout at most: a host that does not answer holds up nobody.
    const { connectTimeout, monitorInterval } = this.#cluster.options
    this.#starting = settledWithin(this.tick(), Math.min(connectTimeout, monitorInterval), true).finally(() => {
      this.#starting = null
    })
  }

  /**
   * The first round while it runs, else null. A replica serves reads only
   * once a round has judged it, so reads issued right after connect() wait
   * for this round (one round trip; at most min(connectTimeout,
   * monitorInterval), after which they go where the nodes judged so far
   * allow) rather than to a node not yet seen.
   */
  get starting(): Promise<void> | null {
    return this.#starting
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = null
    this.patroni?.stop()
  }

  /** One round of checks; overlapping ticks share the one in progress (after stop(), only that one). */
  tick(): Promise<void> {
    if (!this.#timer) return this.#ticking ?? Promise.resolve()
    this.#ticking ??= this.#checkAll().finally(() => (this.#ticking = null))
    return this.#ticking
  }

  async #checkAll(): Promise<void> {
    const cluster = this.#cluster
    const now = Date.now()
    // Patroni first: a member it adds is checked in this same round.
    await this.patroni?.follow()
    const due = cluster.nodes.filter((node) => node.dueForCheck(now))
    const positions = await Promise.all(due.map((node) => this.#check(node)))
    if (!this.#timer) return // stopped while checking

    // A writable node of another cluster never takes the writes.
    const clusterId = cluster.leader.systemId
    cluster.electLeader(
      cluster.nodes.filter((node) =>
        node.failures === 0 && node.inRecovery === false && (clusterId === null || node.systemId === null || node.systemId === clusterId)
      ),
    )
    const leader = cluster.leader
    const leaderRow = positions[due.indexOf(leader)]
    const leaderLsn = leaderRow && !leaderRow.in_recovery ? parseLsn(leaderRow.current_lsn) : null
    let leaderLsnAfterReplicas: bigint | null = null
    if (leaderLsn !== null) this.#remember(leaderLsn, now)
    if (leaderRow && leaderLsn !== null) {
      leader.followProblem = null
      leader.followDetail = null
      // Nodes were asked in parallel: a replica answering after the leader may stand past the leader's first answer.
      if (positions.some((row) => pastLeader(row, leaderLsn!))) leaderLsnAfterReplicas = await this.#leaderLsnNow(leader)
    }

    due.forEach((node, index) => {
      const row = positions[index]
      if (!row || node === leader || !row.in_recovery) return
      const back = node.verdictDue
      node.verdictDue = false
      this.#judge(node, row, { leader, leaderRow: leaderRow ?? null, leaderLsn, leaderLsnAfterReplicas, clusterId, now })
      // Back from a failure, and judged fit in the same round: only now may it serve reads again.
      if (back && node.available) this.#cluster.emit('restore', { name: node.name, url: node.safeUrl, reason: 'reachable' })
    })
  }

  /** One replica's verdict for this round: follows the leader, and how far behind. */
  #judge(node: ClusterNode, row: Record<string, any>, round: RoundFacts): void {
    const { leader, leaderRow, leaderLsn, leaderLsnAfterReplicas, clusterId, now } = round
    node.replayLsn = maxLsn(node.replayLsn, parseLsn(row.replay_lsn))
    node.receiveLsn = parseLsn(row.receive_lsn)
    if (leaderLsn === null || !leaderRow) {
      // Lag is unknown without the leader: keep the last values, and judge only what the node says alone.
      this.#judgeWithoutLeader(node, row, clusterId ?? leader.systemId)
      return
    }
    if (pastLeader(row, leaderLsn)) {
      // Past the leader's first answer: judged against its position read after the replicas answered,
      // and never called diverged because that second read did not come back in time.
      if (leaderLsnAfterReplicas === null) this.#judgeWithoutLeader(node, row, clusterId ?? leader.systemId)
      else this.#apply(node, judgeFollowing(replicaView(row, parseLsn), leaderView(leaderRow, leaderLsnAfterReplicas)))
    } else {
      this.#apply(node, judgeFollowing(replicaView(row, parseLsn), leaderView(leaderRow, leaderLsn)))
    }
    node.lagBytes = lsnDistance(node.replayLsn, leaderLsn)
    node.lagMs = this.#lagMs(node.replayLsn, now)
    this.#retireOrRestore(node)
  }

  async #check(node: ClusterNode): Promise<Record<string, any> | null> {
    const { connectTimeout, monitorInterval } = this.#cluster.options
    // A first answer includes connecting and logging in: up to a second (within connectTimeout), later ones one interval.
    const timeout = node.named ? Math.min(connectTimeout, monitorInterval) : Math.min(connectTimeout, Math.max(monitorInterval, 1000))
    try {
      const [row] = await withTimeout(node.monitor.unsafe(NODE_POSITION), timeout, node.name)
      node.inRecovery = row.in_recovery
      node.systemId = row.system_identifier ?? null
      node.timeline = row.timeline ?? null
      node.currentLsn = row.in_recovery ? null : parseLsn(row.current_lsn)
      this.#learnName(node, row.cluster_name)
      this.#cluster.nodeAnswered(node)
      return row
    } catch (error) {
      this.#cluster.nodeFailed(node, error)
      return null
    }
  }

  /**
   * The server's cluster_name names the node from its first answer on, unless another node has that name.
   * Patroni sets every member's cluster_name to its scope: there the member name (patroni.ts) names it.
   */
  #learnName(node: ClusterNode, clusterName: string | null): void {
    if (node.named) return
    node.named = true
    if (clusterName && !this.patroni && !this.#cluster.nodes.some((other) => other !== node && other.name === clusterName)) node.name = clusterName
  }

  async #leaderLsnNow(leader: ClusterNode): Promise<bigint | null> {
    const { connectTimeout, monitorInterval } = this.#cluster.options
    try {
      const [row] = await withTimeout(leader.monitor.unsafe(LEADER_LSN), Math.min(connectTimeout, monitorInterval), leader.name)
      return parseLsn(row.lsn)
    } catch {
      return null
    }
  }

  /**
   * Without the leader, a replica seen to follow keeps serving reads (its
   * WAL receiver stopped because the leader is gone: what it has is the last
   * word), and one out for a reason only the leader can lift stays out. A
   * replica not judged yet is admitted when it streams from someone (a tag
   * whose leader URL is wrong or refuses the login still reads) and kept out
   * when it streams from nobody (a fenced old leader started by hand).
   */
  #judgeWithoutLeader(node: ClusterNode, row: Record<string, any>, clusterId: string | null): void {
    const verdict = judgeWithoutLeader(replicaView(row, parseLsn), clusterId)
    if (node.followChecked && verdict.problem !== 'other-cluster') {
      if (node.followProblem === null || verdict.problem === null) return
    }
    this.#apply(node, verdict)
  }

  /**
   * Out of the reads with a reason while it does not follow the leader; back
   * once it does (a retire / restore event each time the verdict changes).
   */
  #apply(node: ClusterNode, verdict: FollowVerdict): void {
    const before = node.followProblem
    const wasChecked = node.followChecked
    node.followChecked = true
    node.followDetail = verdict.problem ? verdict.detail : null
    if (verdict.problem === before) return
    node.followProblem = verdict.problem
    const detail = { name: node.name, url: node.safeUrl, detail: verdict.detail }
    if (verdict.problem) {
      if (verdict.problem === 'other-cluster') {
        this.#warn(`${node.name} (${node.safeUrl}) ${verdict.detail}: it is never read from. Remove it from the descriptor.`)
      }
      // A replica that was out for lag or unreachable left the reads already; the reason still changes.
      this.#cluster.emit('retire', { ...detail, reason: verdict.problem })
    } else if (wasChecked && !node.retired && node.failures === 0) {
      this.#cluster.emit('restore', { ...detail, reason: 'following' })
    }
  }

  /** A warning event, or the console when nobody listens (as the router's own warnings). */
  #warn(message: string): void {
    if (!this.#cluster.emit('warning', { message })) console.warn(`pgfollow: ${message}`)
  }

  #remember(lsn: bigint, at: number): void {
    const history = this.#history
    if (history.length === 0 || history[history.length - 1].lsn !== lsn) history.push({ lsn, at })
    // Keep twice maxLag of history: a replica further behind is retired either way.
    const horizon = at - Math.max(2 * this.#cluster.options.maxLag.ms, 10 * this.#cluster.options.monitorInterval)
    while (history.length > 2 && history[1].at < horizon) history.shift()
  }

  /**
   * Time lag: how long ago the leader first stood beyond the replica's
   * replay position. A replica that replayed everything has none, so an
   * idle leader is no lag (unlike now() - pg_last_xact_replay_timestamp()).
   */
  #lagMs(replay: bigint | null, now: number): number {
    const history = this.#history
    if (replay === null || history.length === 0 || replay >= history[history.length - 1].lsn) return 0
    const passed = history.find((sample) => sample.lsn > replay) ?? history[0]
    return now - passed.at
  }

  /** Out beyond maxLag, back in below half of it: hysteresis, so a node near the limit does not flap. */
  #retireOrRestore(node: ClusterNode): void {
    const { bytes, ms } = this.#cluster.options.maxLag
    const detail = { name: node.name, url: node.safeUrl, lagBytes: node.lagBytes, lagMs: node.lagMs }
    if (!node.retired && (node.lagBytes > bytes || node.lagMs > ms)) {
      node.retired = true
      this.#cluster.emit('retire', { ...detail, reason: 'lag' })
    } else if (node.retired && node.lagBytes <= bytes / 2 && node.lagMs <= ms / 2) {
      node.retired = false
      if (node.failures === 0 && node.followProblem === null) this.#cluster.emit('restore', { ...detail, reason: 'lag' })
    }
  }
}

/** A standby's row that stands past `lsn` (replayed or received). */
function pastLeader(row: Record<string, any> | null, lsn: bigint): boolean {
  return Boolean(row?.in_recovery) && [row!.replay_lsn, row!.receive_lsn].some((text) => (parseLsn(text) ?? 0n) > lsn)
}

/**
 * Resolves on a later macrotask. A statement that no node can serve fails
 * without I/O: rejected right away, a caller that retries in a loop
 * (`while (on) try { await sql`...` } catch {}`) would run on microtasks
 * alone, and no timer would fire, the monitor's that notices a recovery
 * included. Failing after this lets them run.
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0))
}

/**
 * Waits for `promise` to settle (either way), `ms` at most; `unref`: the
 * wait keeps no process alive.
 */
export async function settledWithin(promise: Promise<unknown>, ms: number, unref = false): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const out = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))
  if (unref) unrefTimer(timer)
  try {
    await Promise.race([promise.then(() => {}, () => {}), out])
  } finally {
    clearTimeout(timer)
  }
}

/** Deno's timers are numbers; Node's are objects with unref. */
export function unrefTimer(timer: unknown): void {
  const maybe = timer as { unref?: () => void }
  if (typeof maybe?.unref === 'function') maybe.unref()
  else if (typeof (globalThis as any).Deno?.unrefTimer === 'function') (globalThis as any).Deno.unrefTimer(timer)
}
