/**
 * Replication lag as an operator sees it (scripts/lagcheck.mjs): the
 * leader's own view of each replica (per slot: sent/flushed/replayed bytes
 * behind, replay lag in ms that is 0 when caught up, WAL retained by the
 * slot) joined with what each replica in the descriptor says about itself,
 * so a replica that is not connected to the leader still shows up: `down`
 * when it does not answer, and a replica that answers but does not follow
 * the leader shows why (not-following, diverged, wrong-upstream,
 * other-cluster). The asking and joining is lib/ops/replication.ts, shared
 * with `cluster.mjs status`.
 */
import { FOLLOW_PROBLEMS, type FollowProblem } from '../tag/follow.ts'
import type { ClusterDescriptor } from '../tag/descriptor.ts'
import { redactUrl } from '../tag/errors.ts'
import { type ReplicaReading, ReplicationReader } from './replication.ts'

/**
 * A replica's state: the walsender's (streaming, catchup, startup, backup,
 * stopping) while it follows the leader; why it does not (a FollowProblem);
 * `stopped` when it answers but no leader does; `down`; or `leader` for a
 * second node that accepts writes.
 */
export type ReplicaState = 'streaming' | 'catchup' | 'startup' | 'backup' | 'stopping' | 'stopped' | 'down' | 'leader' | FollowProblem

export interface LeaderLag {
  name: string
  url: string
  /** `leader`, or `down` when no node of the descriptor accepts writes. */
  state: 'leader' | 'down'
  /** pg_current_wal_lsn() of the leader. */
  lsn: string | null
  /** Replicas with a walsender (streaming or catching up). */
  connectedReplicas: number
  /** The node that leads is not the descriptor's leader (a failover the descriptor does not know yet). */
  moved: boolean
  error: string | null
}

export interface ReplicaLag {
  name: string
  url: string
  state: ReplicaState
  slot: string | null
  /** The WAL position the replica has replayed (what its readers see). */
  replayLsn: string | null
  /** sync, async, potential or quorum (pg_stat_replication.sync_state). */
  syncState: string | null
  /** Replayed: how far the data a reader sees is behind the leader. */
  lagBytes: number | null
  sentLagBytes: number | null
  flushLagBytes: number | null
  /** Replay lag in ms as PostgreSQL measures it; 0 when the replica replayed everything (an idle leader is not lag). */
  lagMs: number | null
  /** WAL the leader keeps for this replica's slot. */
  retainedBytes: number | null
  /** host:port the replica's WAL receiver streams from, when it says. */
  upstream: string | null
  /** Why it does not follow the leader (or what is wrong), null when all is well. */
  error: string | null
}

/** One look at the cluster. */
export interface LagSnapshot {
  time: string
  leader: LeaderLag
  replicas: ReplicaLag[]
  /** Slots on the leader that no replica of the descriptor claims (they retain WAL all the same). */
  orphanSlots: { slot: string; active: boolean; retainedBytes: number | null }[]
}

export interface LagLimits {
  maxLagBytes?: number
  maxLagMs?: number
}

/** The verdict of a monitoring check, Nagios-style: 0 fine, 1 a node is down or does not follow, 2 lag beyond a limit. */
export interface LagVerdict {
  exitCode: 0 | 1 | 2
  problems: string[]
}

const num = (value: unknown): number | null => (value === null || value === undefined ? null : Number(value))

/** Keeps one connection per node open between looks (see ReplicationReader). */
export class LagProbe {
  readonly descriptor: ClusterDescriptor
  readonly #reader: ReplicationReader

  constructor(descriptor: ClusterDescriptor, options: { timeoutMs?: number } = {}) {
    this.descriptor = descriptor
    this.#reader = new ReplicationReader([descriptor.leader, ...descriptor.replicas], {
      ...options,
      applicationName: 'pgfollow-lagcheck',
      patroni: descriptor.patroni,
    })
  }

  /** Asks every node at once, then the leader for its view of the replicas. */
  async snapshot(): Promise<LagSnapshot> {
    const time = new Date().toISOString()
    const reading = await this.#reader.read()
    const { leader: leaderNode, leaderError, slots } = reading
    const leader: LeaderLag = {
      name: reading.leaderName,
      url: redactUrl(leaderNode?.url ?? this.descriptor.leader),
      state: leaderNode && !leaderError ? 'leader' : 'down',
      lsn: leaderNode?.position?.current_lsn ?? null,
      connectedReplicas: leaderNode ? slots.filter((row) => row.active && row.state !== 'stopped').length : 0,
      moved: leaderNode !== null && leaderNode.index !== 0,
      error: leaderError,
    }
    return {
      time,
      leader,
      replicas: reading.replicas.map((replica) => replicaLag(replica, leader.state === 'leader')),
      orphanSlots: reading.orphanSlots.map((row) => ({
        slot: String(row.slot_name),
        active: Boolean(row.active),
        retainedBytes: num(row.retained_bytes),
      })),
    }
  }

  async end(): Promise<void> {
    await this.#reader.end()
  }
}

function replicaLag(replica: ReplicaReading, leaderView: boolean): ReplicaLag {
  const { node, slot: row, follow } = replica
  const position = node.position
  const base: ReplicaLag = {
    name: replica.name,
    url: redactUrl(node.url),
    state: 'down',
    slot: row ? String(row.slot_name) : position?.receiver_slot ?? null,
    replayLsn: position?.replay_lsn ?? null,
    syncState: null,
    lagBytes: null,
    sentLagBytes: null,
    flushLagBytes: null,
    lagMs: null,
    retainedBytes: row ? num(row.retained_bytes) : null,
    upstream: position?.sender_host ? `${position.sender_host}:${position.sender_port}` : null,
    error: node.error,
  }
  if (!position) return base
  if (!position.in_recovery) return { ...base, state: 'leader', error: 'listed as a replica but accepts writes: a second leader' }
  if (follow?.problem) return { ...base, state: follow.problem, error: follow.detail }
  const streams = row && row.active && row.state !== 'stopped'
  if (!leaderView || !streams) return { ...base, state: 'stopped' }
  return {
    ...base,
    state: row.state as ReplicaState,
    syncState: row.sync_state ?? null,
    lagBytes: num(row.replay_lag_bytes),
    sentLagBytes: num(row.sent_lag_bytes),
    flushLagBytes: num(row.flush_lag_bytes),
    lagMs: row.replay_lag_ms === null ? null : Math.round(Number(row.replay_lag_ms) * 10) / 10,
  }
}

/** One look and done: what `lagcheck --once` does. */
export async function lagSnapshot(descriptor: ClusterDescriptor, options: { timeoutMs?: number } = {}): Promise<LagSnapshot> {
  const probe = new LagProbe(descriptor, options)
  try {
    return await probe.snapshot()
  } finally {
    await probe.end()
  }
}

/**
 * The monitoring verdict. A node that does not answer, a replica that does
 * not stream and a second leader are exit 1, and win over lag (exit 2):
 * with a node missing the lag picture itself is incomplete.
 */
export function judgeLag(snapshot: LagSnapshot, limits: LagLimits = {}): LagVerdict {
  const down: string[] = []
  const lagging: string[] = []
  if (snapshot.leader.state === 'down') down.push(`the leader ${snapshot.leader.name} is down (${snapshot.leader.error})`)
  for (const replica of snapshot.replicas) {
    if (replica.state === 'down') down.push(`${replica.name} is down (${replica.error})`)
    else if (replica.state === 'leader') down.push(`${replica.name} ${replica.error}`)
    else if (FOLLOW_PROBLEMS.includes(replica.state as FollowProblem)) {
      down.push(`${replica.name} ${replica.error ?? replica.state}: it must not serve reads`)
    } else if (replica.state === 'stopped' && snapshot.leader.state !== 'down') down.push(`${replica.name} runs but does not stream from the leader`)
    if (limits.maxLagBytes !== undefined && replica.lagBytes !== null && replica.lagBytes > limits.maxLagBytes) {
      lagging.push(`${replica.name} is ${replica.lagBytes} bytes behind (limit ${limits.maxLagBytes})`)
    }
    if (limits.maxLagMs !== undefined && replica.lagMs !== null && replica.lagMs > limits.maxLagMs) {
      lagging.push(`${replica.name} is ${replica.lagMs} ms behind (limit ${limits.maxLagMs})`)
    }
  }
  if (down.length > 0) return { exitCode: 1, problems: [...down, ...lagging] }
  if (lagging.length > 0) return { exitCode: 2, problems: lagging }
  return { exitCode: 0, problems: [] }
}
