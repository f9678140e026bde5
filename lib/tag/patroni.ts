/**
 * Following Patroni: each monitor round (and each hunt for a leader after a
 * write failed) also reads Patroni's `/cluster` and takes the topology from
 * it. The node Patroni names leader takes the writes as soon as it accepts
 * them, without waiting for a write to fail; a member Patroni reports as
 * not running (or on another timeline, or tagged noloadbalance) leaves the
 * reads; a member the tag does not know yet joins them.
 */
import { unrefTimer } from './health.ts'
import type { ClusterNode } from './node.ts'
import { memberKey, memberUrl, nodeKey, type PatroniMember, readExclusion, readPatroniCluster } from './patroni-view.ts'

export {
  endpointKey,
  memberAddress,
  memberKey,
  memberUrl,
  nodeKey,
  type PatroniMember,
  type PatroniView,
  readExclusion,
  readPatroniCluster,
} from './patroni-view.ts'

/** How often Patroni is asked while no leader takes writes: its view names the new leader before it accepts them. */
const HUNT_INTERVAL = 20
/** How long it is asked that often (Patroni's default ttl); then once per monitorInterval. */
const HUNT_FAST_FOR = 30_000

/** What the follower needs from the router. */
export interface PatroniFollowed {
  readonly nodes: ClusterNode[]
  readonly leader: ClusterNode
  /** The leader answers and is not in recovery. */
  readonly leaderUsable: boolean
  readonly options: { leader: string; connectTimeout: number; monitorInterval: number; patroni: string[] }
  electLeader(writable: ClusterNode[]): void
  addNode(url: string, name?: string): ClusterNode
  emit(event: string, payload: unknown): boolean
}

/**
 * Applies Patroni's view to the router, once per monitor round. Promotion
 * is confirmed on the server (pg_is_in_recovery() false) before writes
 * move: Patroni names the leader as soon as it holds the leader key, a few
 * milliseconds before the promotion completes.
 */
export class PatroniFollower {
  readonly #cluster: PatroniFollowed
  /** A leader Patroni named that is still finishing its promotion, polled until it accepts writes. */
  #promoting: Promise<void> | null = null
  /** When Patroni first named the current leader (tests and events measure from it). */
  leaderNamedAt = 0
  #namedLeader: string | null = null

  constructor(cluster: PatroniFollowed) {
    this.#cluster = cluster
  }

  /**
   * Starts looking at Patroni every HUNT_INTERVAL while no leader takes
   * writes (the leader failed, or is in recovery), unless already looking;
   * resolves with the first look. The monitor's round (every
   * monitorInterval) and discovery (which waits for a dead node's check
   * up to connectTimeout) are too slow to see Patroni name the new leader
   * within a few tens of milliseconds.
   */
  hunt(): Promise<boolean> {
    const look = this.follow()
    if (!this.#hunting && !this.#stopped) {
      this.#hunting = true
      void this.#huntLoop(look)
    }
    return look
  }

  /** No more looks (the tag ends). */
  stop(): void {
    this.#stopped = true
  }

  #hunting = false
  #stopped = false

  async #huntLoop(first: Promise<boolean>): Promise<void> {
    const since = Date.now()
    try {
      let look = first
      while (!this.#stopped) {
        await look
        if (this.#cluster.leaderUsable && !this.#promoting) return
        // Patroni's ttl bounds a failover (30 s by default): past that, a leader is not coming soon.
        const pause = Date.now() - since < HUNT_FAST_FOR ? HUNT_INTERVAL : this.#cluster.options.monitorInterval
        await new Promise((resolve) => unrefTimer(setTimeout(resolve, pause)))
        look = this.follow()
      }
    } finally {
      this.#hunting = false
    }
  }

  /**
   * One look at Patroni; resolves false when no endpoint answered (the
   * router's own checks still run). Looks asked for within HUNT_INTERVAL
   * of the last share it: discovery calls this on every failed write.
   */
  follow(): Promise<boolean> {
    const now = Date.now()
    if (this.#looking && now - this.#lookedAt < HUNT_INTERVAL) return this.#looking
    this.#lookedAt = now
    this.#looking = this.#follow()
    return this.#looking
  }

  #looking: Promise<boolean> | null = null
  #lookedAt = 0

  async #follow(): Promise<boolean> {
    const cluster = this.#cluster
    const { monitorInterval, connectTimeout, patroni } = cluster.options
    const view = await readPatroniCluster(patroni, Math.max(100, Math.min(500, monitorInterval, connectTimeout)))
    if (!view || this.#stopped) return false
    const byKey = new Map(cluster.nodes.map((node) => [nodeKey(node.url), node]))
    for (const member of view.members) {
      const key = memberKey(member)
      if (!byKey.has(key)) byKey.set(key, cluster.addNode(memberUrl(cluster.options.leader, member), member.name))
    }
    const leaderMember = view.members.find((member) => member.role === 'leader' && member.state === 'running')
    const members = new Map(view.members.map((member) => [memberKey(member), member]))
    for (const [key, node] of byKey) this.#name(node, members.get(key))
    for (const [key, node] of byKey) {
      if (leaderMember && key === memberKey(leaderMember)) {
        this.#hold(node, null)
        continue
      }
      this.#hold(node, readExclusion(members.get(key), leaderMember))
    }
    if (leaderMember) {
      const node = byKey.get(memberKey(leaderMember))!
      if (this.#namedLeader !== leaderMember.name) {
        this.#namedLeader = leaderMember.name
        this.leaderNamedAt = Date.now()
      }
      if (node !== cluster.leader) this.#promoting ??= this.#moveWrites(node).finally(() => (this.#promoting = null))
    }
    return true
  }

  /** A descriptor's node takes its member's name, unless another node has it. */
  #name(node: ClusterNode, member: PatroniMember | undefined): void {
    if (!member || node.name === member.name || this.#cluster.nodes.some((other) => other.name === member.name)) return
    node.name = member.name
  }

  /** Keeps a node out of the reads for `reason` (null lets it back), with the router's events. */
  #hold(node: ClusterNode, reason: string | null): void {
    if (node.heldOut === reason) return
    const was = node.available
    node.heldOut = reason
    if (was && !node.available) this.#cluster.emit('retire', { name: node.name, url: node.safeUrl, reason: 'patroni', detail: reason })
    else if (!was && node.available) this.#cluster.emit('restore', { name: node.name, url: node.safeUrl, reason: 'patroni' })
  }

  /** Polls the named leader until it accepts writes (bounded by connectTimeout), then moves writes there. */
  async #moveWrites(node: ClusterNode): Promise<void> {
    const cluster = this.#cluster
    const deadline = Date.now() + Math.max(cluster.options.connectTimeout, cluster.options.monitorInterval)
    while (Date.now() < deadline && cluster.leader !== node) {
      try {
        const [row] = await withDeadline(node.monitor`select pg_is_in_recovery() as in_recovery`, deadline)
        node.inRecovery = row.in_recovery
        if (!row.in_recovery) {
          node.succeed()
          cluster.electLeader([node])
          return
        }
      } catch {
        // not accepting connections yet: ask again
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
}

/** Rejects at `deadline` (epoch ms) unless the promise settles first. */
function withDeadline<T>(promise: Promise<T>, deadline: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer')), Math.max(1, deadline - Date.now()))))
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}
