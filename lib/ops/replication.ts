/**
 * The one reader of replication status, shared by `lagcheck` (lib/ops/lag.ts)
 * and `cluster.mjs status` (lib/cluster/status.ts), so they cannot disagree
 * about the same cluster. Every node answers NODE_POSITION (the query the
 * tag's monitor runs); the node that is not in recovery (the first listed
 * one when several are) is the leader, whose view of its replicas
 * (sql/queries/replication-state.sql, one row per slot) is joined to each
 * replica: by its slot, else by the application_name its WAL receiver
 * connects with, else by its cluster_name; a replica that is down and never
 * answered may take the one inactive slot left. Each replica that answers
 * is judged by lib/tag/follow.ts, as the tag judges it. With Patroni
 * endpoints, nodes are named by their Patroni member names (Patroni gives
 * every node its scope as cluster_name, which then names none of them).
 */
import postgres from 'postgres'
import { type FollowVerdict, judgeFollowing, leaderView, replicaView } from '../tag/follow.ts'
import { redactMessage, redactUrl } from '../tag/errors.ts'
import { withTimeout } from '../tag/health.ts'
import { parseLsn } from '../tag/lsn.ts'
import { hostAndPort } from '../tag/node.ts'
import { memberKey, nodeKey, readPatroniCluster } from '../tag/patroni-view.ts'
import { LEADER_LSN, NODE_POSITION } from '../tag/queries.ts'
import { sqlText } from './sqlfiles.ts'

/** A row of replication-state.sql: one slot on the leader, with its WAL sender if one is connected. */
export type SlotRow = Record<string, any>

/** What one node of the descriptor said (or why it did not). */
export interface NodeReading {
  /** Place in the descriptor: 0 is the descriptor's leader. */
  index: number
  url: string
  /** Its NODE_POSITION row; null when it did not answer. */
  position: Record<string, any> | null
  error: string | null
}

/** A node other than the leader, joined to the leader's view of it. */
export interface ReplicaReading {
  node: NodeReading
  /** What it or the leader call it: its Patroni member name, else cluster_name, else the slot's application_name or name, else host:port. */
  name: string
  /** Its slot on the leader, when one is found. */
  slot: SlotRow | null
  /** Whether it follows the leader; null when it or the leader did not answer (or it is not in recovery). */
  follow: FollowVerdict | null
}

export interface ReplicationReading {
  nodes: NodeReading[]
  /** The node that accepts writes; null when none does. */
  leader: NodeReading | null
  leaderName: string
  /** Why the leader's view is missing, when it is. */
  leaderError: string | null
  /** The leader's pg_current_wal_lsn(), read after every replica answered. */
  leaderLsn: string | null
  slots: SlotRow[]
  /** Every node but the leader (but the descriptor's leader when none leads), in descriptor order. */
  replicas: ReplicaReading[]
  /** Slots no node of the descriptor claims (they retain WAL all the same). */
  orphanSlots: SlotRow[]
}

/**
 * Keeps one connection per node open between readings (`lagcheck
 * --interval` does not reconnect every second); a node that stops answering
 * is retried at each reading (postgres.js reconnects by itself).
 */
export class ReplicationReader {
  readonly urls: string[]
  readonly #timeoutMs: number
  readonly #clients: postgres.Sql[]
  /** What each node said last time: the slot and name of a node that is down now. */
  readonly #known = new Map<string, Record<string, any>>()
  readonly #patroni: readonly string[]
  /** Patroni member names by host:port, as last read (a member whose Patroni is down keeps its name). */
  readonly #memberNames = new Map<string, string>()

  /** `patroni`: the cluster's Patroni REST endpoints, which name the nodes. */
  constructor(urls: string[], options: { timeoutMs?: number; applicationName?: string; patroni?: readonly string[] } = {}) {
    this.urls = urls
    this.#timeoutMs = options.timeoutMs ?? 3_000
    this.#patroni = options.patroni ?? []
    const seconds = Math.max(1, Math.ceil(this.#timeoutMs / 1000))
    this.#clients = urls.map((url) =>
      postgres(url, {
        max: 1,
        onnotice: () => {},
        fetch_types: false,
        connect_timeout: seconds,
        idle_timeout: 0,
        connection: { application_name: options.applicationName ?? 'pgfollow-status' },
      })
    )
  }

  /** Asks every node at once, then the leader for its view of the replicas and its position. */
  async read(): Promise<ReplicationReading> {
    const [nodes] = await Promise.all([Promise.all(this.urls.map((url, index) => this.#ask(index, url))), this.#readMemberNames()])
    const leader = pickLeader(nodes)
    let slots: SlotRow[] = []
    let leaderLsn: string | null = null
    let leaderError: string | null = leader ? null : nodes[0]?.error ?? 'no node accepts writes (every node is in recovery)'
    if (leader) {
      try {
        const client = this.#clients[leader.index]
        // After the replicas answered: none that follows can stand past this position.
        const [rows, [now]] = await withTimeout(
          Promise.all([client.unsafe(sqlText('queries/replication-state.sql')), client.unsafe(LEADER_LSN)]),
          this.#timeoutMs,
          'the leader',
        )
        slots = [...rows]
        leaderLsn = now.lsn
      } catch (error) {
        leaderError = redactMessage(error, leader.url)
      }
    }
    const others = nodes.filter((node) => node !== (leader ?? nodes[0]))
    const claimed = new Set<SlotRow>()
    const replicas = new Map<NodeReading, ReplicaReading>()
    // Nodes that answer first: they say which slot is theirs; a down one may then take the one slot left.
    for (const node of [...others.filter((n) => n.position), ...others.filter((n) => !n.position)]) {
      const identity = node.position ?? this.#known.get(node.url) ?? null
      const slot = findSlot(identity, slots, claimed, node.position === null)
      if (slot) claimed.add(slot)
      const judged = leader && leaderLsn !== null && leaderError === null && node.position?.in_recovery
      const follow = judged ? judgeFollowing(replicaView(node.position!, parseLsn), leaderView(leader.position!, parseLsn(leaderLsn)!)) : null
      replicas.set(node, { node, name: this.#memberName(node) ?? nodeName(node, slot, identity), slot, follow })
    }
    const leaderNode = leader ?? nodes[0]
    return {
      nodes,
      leader,
      leaderName: this.#memberName(leaderNode) ?? nodeName(leaderNode, null, leaderNode.position ?? this.#known.get(leaderNode.url) ?? null),
      leaderError,
      leaderLsn,
      slots,
      replicas: others.map((node) => replicas.get(node)!),
      orphanSlots: slots.filter((row) => !claimed.has(row)),
    }
  }

  async #readMemberNames(): Promise<void> {
    const view = await readPatroniCluster(this.#patroni, this.#timeoutMs)
    for (const member of view?.members ?? []) this.#memberNames.set(memberKey(member), member.name)
  }

  #memberName(node: NodeReading): string | undefined {
    return this.#memberNames.get(nodeKey(node.url))
  }

  async #ask(index: number, url: string): Promise<NodeReading> {
    try {
      const [position] = await withTimeout(this.#clients[index].unsafe(NODE_POSITION), this.#timeoutMs, redactUrl(url))
      this.#known.set(url, position)
      return { index, url, position, error: null }
    } catch (error) {
      return { index, url, position: null, error: redactMessage(error, url) }
    }
  }

  async end(): Promise<void> {
    await Promise.all(this.#clients.map((client) => client.end({ timeout: 1 })))
  }
}

/** The descriptor's leader when it leads, else the first node that is not in recovery. */
function pickLeader(nodes: NodeReading[]): NodeReading | null {
  const writable = nodes.filter((node) => node.position && !node.position.in_recovery)
  return writable.find((node) => node.index === 0) ?? writable[0] ?? null
}

/**
 * The leader's slot row of a node: by the slot its receiver uses (or
 * primary_slot_name), else by the application_name it connects with, else
 * by its cluster_name. A node that is down and never answered may take the
 * one unclaimed inactive slot, if exactly one is left.
 */
function findSlot(identity: Record<string, any> | null, slots: SlotRow[], claimed: Set<SlotRow>, down: boolean): SlotRow | null {
  const free = slots.filter((row) => !claimed.has(row))
  const keys: [string, unknown][] = [
    ['slot_name', identity?.receiver_slot],
    ['application_name', identity?.receiver_application_name],
    ['application_name', identity?.cluster_name],
  ]
  for (const [column, value] of keys) {
    const found = value ? free.find((row) => row[column] === value) : undefined
    if (found) return found
  }
  if (down && !identity) {
    const inactive = free.filter((row) => !row.active)
    if (inactive.length === 1) return inactive[0]
  }
  return null
}

function nodeName(node: NodeReading, slot: SlotRow | null, identity: Record<string, any> | null): string {
  if (identity?.cluster_name) return String(identity.cluster_name)
  if (slot?.application_name) return String(slot.application_name)
  if (slot?.slot_name) return String(slot.slot_name).replace(/^pgfollow_/, '')
  return hostAndPort(node.url)
}
