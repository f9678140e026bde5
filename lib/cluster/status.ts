/**
 * What each node of a local cluster is doing: role, replication state and
 * lag, read by the same reader as `lagcheck` (lib/ops/replication.ts), so a
 * node that does not follow the leader shows why here too.
 */
import { resolve } from 'node:path'
import { DEFAULT_CLUSTER_DIR } from '../tag/descriptor.ts'
import { redactUrl } from '../tag/errors.ts'
import { ReplicationReader } from '../ops/replication.ts'
import { nodePid, nodeUrl, requireState } from './local.ts'
import { withPatroniRoles } from './ha/run.ts'

export interface ServerStatus {
  name: string
  /** The role the server reports (pg_is_in_recovery), or the recorded one when it is down. */
  role: 'leader' | 'replica'
  port: number
  url: string
  pid: number | null
  /**
   * leader; the walsender state of a replica that follows it (streaming,
   * catchup, ...); why one does not (not-following, diverged,
   * wrong-upstream, other-cluster); stopped (no leader to follow); or down.
   */
  state: string
  lagBytes: number | null
  lagMs: number | null
  /** What is wrong, in a sentence, when something is. */
  detail: string | null
}

export interface ClusterStatus {
  dir: string
  nodes: ServerStatus[]
  /** Every node runs and every replica streams from the leader. */
  healthy: boolean
}

/** Asks every node of the cluster in `dir`; a node that does not answer is `down`. */
export async function status(dirOption?: string): Promise<ClusterStatus> {
  const dir = resolve(dirOption ?? DEFAULT_CLUSTER_DIR)
  const stored = requireState(dir)
  // Patroni moves the leadership by itself: ask it who leads now.
  const state = stored.ha ? await withPatroniRoles(stored) : stored
  const reader = new ReplicationReader(state.nodes.map((node) => nodeUrl(state, node)))
  let reading
  try {
    reading = await reader.read()
  } finally {
    await reader.end()
  }
  const nodes = state.nodes.map((node, index): ServerStatus => {
    const answer = reading.nodes[index]
    const base: ServerStatus = {
      name: node.name,
      role: node.role,
      port: node.port,
      url: redactUrl(answer.url),
      pid: nodePid(dir, node.name),
      state: 'down',
      lagBytes: null,
      lagMs: null,
      detail: answer.error,
    }
    if (!base.pid || !answer.position) return base
    if (answer === reading.leader) return { ...base, role: 'leader', state: 'leader', lagBytes: 0, lagMs: 0, detail: null }
    if (!answer.position.in_recovery) return { ...base, role: 'leader', state: 'leader', detail: 'a second node accepts writes' }
    const replica = reading.replicas.find((r) => r.node === answer)
    const row = replica?.slot
    if (replica?.follow?.problem) return { ...base, role: 'replica', state: replica.follow.problem, detail: replica.follow.detail }
    const streams = reading.leader && row && row.active && row.state !== 'stopped'
    return {
      ...base,
      role: 'replica',
      state: streams ? String(row.state) : 'stopped',
      lagBytes: streams ? Number(row.replay_lag_bytes) : null,
      lagMs: streams ? Math.round(Number(row.replay_lag_ms)) : null,
      detail: streams ? null : reading.leaderError,
    }
  })
  const leaders = nodes.filter((node) => node.state === 'leader').length
  const healthy = leaders === 1 && nodes.every((node) => node.state === 'leader' || node.state === 'streaming')
  return { dir, nodes, healthy }
}
