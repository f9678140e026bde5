/**
 * Does a replica follow the leader? The one decision that says whether a
 * standby may serve reads at all (lag only says how stale it is). Pure: the
 * monitor, `lagcheck` and `cluster.mjs status` all feed it what the nodes
 * said in one round (NODE_POSITION), so they agree about every node.
 *
 * A replica follows while it is of the leader's cluster (system
 * identifier), its WAL receiver streams, the leader lists it among its WAL
 * senders, and it stands nowhere the leader has not been (not on a later
 * timeline, not past the leader's position). A fenced old leader started by
 * hand fails it (it streams from nobody, with WAL the cluster lost); so does
 * a standby of a stale leader, or a node of another cluster.
 */
import { formatLsn } from './lsn.ts'

/** Why a replica does not follow: each is a reason to keep it out of the reads. */
export type FollowProblem = 'other-cluster' | 'diverged' | 'not-following' | 'wrong-upstream'

export const FOLLOW_PROBLEMS: readonly FollowProblem[] = ['other-cluster', 'diverged', 'not-following', 'wrong-upstream']

/** A WAL sender the leader lists (pg_stat_replication with its slot). */
export interface SenderRow {
  /** application_name of the standby's WAL receiver. */
  name: string | null
  state: string | null
  slot: string | null
}

/** What the leader said about itself this round. */
export interface LeaderView {
  systemId: string | null
  timeline: number | null
  /** pg_current_wal_lsn(), read after the replica's position (or re-read when it looked behind it). */
  lsn: bigint
  senders: readonly SenderRow[]
}

/** What a standby said about itself this round. */
export interface ReplicaView {
  systemId: string | null
  /** received_tli of its WAL receiver, else the timeline of its last restartpoint. */
  timeline: number | null
  replayLsn: bigint | null
  receiveLsn: bigint | null
  /** A WAL receiver process exists (visible to any role). */
  receiverRunning: boolean
  /** pg_stat_wal_receiver.status; null when the role may not see it (not pg_read_all_stats). */
  receiverStatus: string | null
  /** The slot it streams from (receiver or primary_slot_name): how the leader's sender list names it. */
  slot: string | null
  /** The application_name its receiver connects with (conninfo, else cluster_name). */
  applicationName: string | null
  /** host:port its receiver streams from, when it may say. */
  upstream: string | null
}

export interface FollowVerdict {
  problem: FollowProblem | null
  /** One sentence for events, status and operators. */
  detail: string
}

const FOLLOWS: FollowVerdict = { problem: null, detail: 'streams from the leader' }

/**
 * The verdict for one replica against the leader. Checked in this order:
 * another cluster, then a history the leader does not have, then no
 * streaming at all, then streaming from someone else.
 */
export function judgeFollowing(replica: ReplicaView, leader: LeaderView): FollowVerdict {
  if (replica.systemId !== null && leader.systemId !== null && replica.systemId !== leader.systemId) {
    return {
      problem: 'other-cluster',
      detail: `belongs to another cluster (system identifier ${replica.systemId}, the leader's is ${leader.systemId})`,
    }
  }
  if (replica.timeline !== null && leader.timeline !== null && replica.timeline > leader.timeline) {
    return { problem: 'diverged', detail: `is on timeline ${replica.timeline}, later than the leader's ${leader.timeline}` }
  }
  const ahead = [replica.replayLsn, replica.receiveLsn].find((lsn) => lsn !== null && lsn > leader.lsn)
  if (ahead !== undefined && ahead !== null) {
    return {
      problem: 'diverged',
      detail: `has WAL up to ${formatLsn(ahead)}, past the leader's ${formatLsn(leader.lsn)}: a history the leader does not have`,
    }
  }
  if (!streams(replica)) return notFollowing(replica)
  // Without a slot or a name the leader's list cannot be searched: the checks above must do.
  if (replica.slot === null && replica.applicationName === null) return FOLLOWS
  const listed = leader.senders.some((sender) =>
    (replica.slot !== null && sender.slot === replica.slot) || (replica.applicationName !== null && sender.name === replica.applicationName)
  )
  if (!listed) {
    const from = replica.upstream ? ` (it streams from ${replica.upstream})` : ''
    const key = replica.slot !== null ? `slot ${replica.slot}` : `application_name ${replica.applicationName}`
    return { problem: 'wrong-upstream', detail: `streams, but not from the leader: the leader has no WAL sender for its ${key}${from}` }
  }
  return FOLLOWS
}

/**
 * What can be told without the leader (it did not answer this round, or
 * the tag never reached it): a node of another cluster than the one the
 * tag knows, or a standby that streams from nobody. Whether it streams from
 * the right node, and not past it, waits for the leader.
 */
export function judgeWithoutLeader(replica: ReplicaView, clusterId: string | null): FollowVerdict {
  if (replica.systemId !== null && clusterId !== null && replica.systemId !== clusterId) {
    return { problem: 'other-cluster', detail: `belongs to another cluster (system identifier ${replica.systemId}, the leader's is ${clusterId})` }
  }
  if (!streams(replica)) return notFollowing(replica)
  return FOLLOWS
}

function streams(replica: ReplicaView): boolean {
  return replica.receiverStatus === null ? replica.receiverRunning : replica.receiverStatus === 'streaming'
}

function notFollowing(replica: ReplicaView): FollowVerdict {
  const why = replica.receiverStatus ? `its WAL receiver is ${replica.receiverStatus}` : 'it has no WAL receiver'
  return { problem: 'not-following', detail: `does not stream from the leader (${why})` }
}

/** The replica's side of a NODE_POSITION row. */
export function replicaView(row: Record<string, any>, parse: (text: string | null) => bigint | null): ReplicaView {
  return {
    systemId: row.system_identifier ?? null,
    timeline: row.timeline === null || row.timeline === undefined ? null : Number(row.timeline),
    replayLsn: parse(row.replay_lsn),
    receiveLsn: parse(row.receive_lsn),
    receiverRunning: Boolean(row.receiver_running),
    receiverStatus: row.receiver_status ?? null,
    slot: row.receiver_slot || null,
    applicationName: row.receiver_application_name || null,
    upstream: row.sender_host ? `${row.sender_host}:${row.sender_port}` : null,
  }
}

/** The leader's side of a NODE_POSITION row (senders arrive as JSON). */
export function leaderView(row: Record<string, any>, lsn: bigint): LeaderView {
  const senders = typeof row.senders === 'string' ? JSON.parse(row.senders) : row.senders
  return {
    systemId: row.system_identifier ?? null,
    timeline: row.timeline === null || row.timeline === undefined ? null : Number(row.timeline),
    lsn,
    senders: Array.isArray(senders) ? senders : [],
  }
}
