/**
 * Following Patroni: each monitor round also reads Patroni's `/cluster`
 * (from the first REST endpoint that answers) and takes the topology from
 * it. The node Patroni names leader takes the writes as soon as it accepts
 * them, without waiting for a write to fail; a member Patroni reports as
 * not running (or on another timeline, or tagged noloadbalance) leaves the
 * reads; a member the tag does not know yet joins them. Web `fetch` only,
 * so Node and Deno run it alike.
 */
import type { ClusterNode } from './node.ts'

/** One member of Patroni's `/cluster` answer (the fields pgfollow reads). */
export interface PatroniMember {
  name: string
  /** leader, replica, sync_standby, standby_leader, ... */
  role: string
  /** running, streaming (Patroni 3.1+), stopped, starting, crashed, ... */
  state: string
  host: string
  port: number
  api_url?: string
  timeline?: number
  /** Bytes behind the leader, or 'unknown'. */
  lag?: number | string
  tags?: Record<string, unknown>
}

export interface PatroniView {
  endpoint: string
  members: PatroniMember[]
}

/**
 * `/cluster` from the first endpoint that answers within `timeoutMs`, or
 * null when none does. All are asked at once: a dead node's endpoint must
 * not cost the round its timeout.
 */
export async function readPatroniCluster(endpoints: readonly string[], timeoutMs: number): Promise<PatroniView | null> {
  if (endpoints.length === 0) return null
  try {
    return await Promise.any(endpoints.map(async (endpoint) => {
      const response = await fetch(`${endpoint.replace(/\/+$/, '')}/cluster`, { signal: AbortSignal.timeout(timeoutMs) })
      if (!response.ok) {
        await response.body?.cancel()
        throw new Error(`HTTP ${response.status}`)
      }
      const body = await response.json() as { members?: unknown }
      if (!Array.isArray(body.members)) throw new Error('no members')
      return { endpoint, members: body.members.filter(isMember) }
    }))
  } catch {
    return null
  }
}

function isMember(value: unknown): value is PatroniMember {
  const member = value as PatroniMember
  return typeof member?.name === 'string' && typeof member.host === 'string' && Number.isInteger(Number(member.port))
}

/** host:port, the identity Patroni members and descriptor URLs are matched by. */
export function endpointKey(host: string, port: number | string): string {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase()
  return `${bare === 'localhost' ? '127.0.0.1' : bare}:${port}`
}

/** A node's host:port, from its URL. */
export function nodeKey(url: string): string {
  const parsed = new URL(url)
  return endpointKey(parsed.hostname, parsed.port || '5432')
}

/**
 * Where clients reach a member: its `pgfollow_address` tag when it has one
 * (a container's published port, set by the Pulumi program), else the
 * host and port Patroni lists.
 */
export function memberAddress(member: PatroniMember): { host: string; port: number } {
  const tag = member.tags?.pgfollow_address
  const match = typeof tag === 'string' ? /^\[?([^\]]+?)\]?:(\d+)$/.exec(tag) : null
  return match ? { host: match[1], port: Number(match[2]) } : { host: member.host, port: Number(member.port) }
}

/** host:port of a member, as clients reach it. */
export function memberKey(member: PatroniMember): string {
  const { host, port } = memberAddress(member)
  return endpointKey(host, port)
}

/** The URL of a member the descriptor does not list: the leader URL's credentials and database, the member's host and port. */
export function memberUrl(leaderUrl: string, member: PatroniMember): string {
  const { host, port } = memberAddress(member)
  const url = new URL(leaderUrl)
  url.hostname = host.includes(':') ? `[${host}]` : host
  url.port = String(port)
  return url.toString()
}

/** Why Patroni's view keeps a replica out of the reads, or null when it may serve them. */
export function readExclusion(member: PatroniMember | undefined, leader: PatroniMember | undefined): string | null {
  if (!member) return 'not a member of the Patroni cluster'
  if (member.state !== 'running' && member.state !== 'streaming') return `Patroni reports it ${member.state}`
  if (member.tags?.noloadbalance === true) return 'tagged noloadbalance in Patroni'
  if (leader && leader.timeline !== undefined && member.timeline !== undefined && member.timeline !== leader.timeline) {
    return `on timeline ${member.timeline}, the leader on ${leader.timeline}`
  }
  if (member.lag === 'unknown') return 'Patroni does not know its replication position'
  return null
}

/** What the follower needs from the router. */
export interface PatroniFollowed {
  readonly nodes: ClusterNode[]
  readonly leader: ClusterNode
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
   * One look at Patroni; resolves false when no endpoint answered (the
   * router's own checks still run). Looks asked for within 50 ms of the
   * last share it: writers hunting for a new leader call this on every
   * failed write.
   */
  follow(): Promise<boolean> {
    const now = Date.now()
    if (this.#looking && now - this.#lookedAt < 50) return this.#looking
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
    if (!view) return false
    const byKey = new Map(cluster.nodes.map((node) => [nodeKey(node.url), node]))
    for (const member of view.members) {
      const key = memberKey(member)
      if (!byKey.has(key)) byKey.set(key, cluster.addNode(memberUrl(cluster.options.leader, member), member.name))
    }
    const leaderMember = view.members.find((member) => member.role === 'leader' && member.state === 'running')
    const members = new Map(view.members.map((member) => [memberKey(member), member]))
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
