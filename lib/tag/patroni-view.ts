/**
 * Patroni's view of a cluster: its REST `/cluster` answer, read with web
 * `fetch` (Node and Deno alike), and the pure rules pgfollow applies to it
 * (how members match nodes, which member may serve reads). No connection
 * state: the follower (patroni.ts) and the operator toolkit (lib/cluster/ha)
 * both use it.
 */

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
