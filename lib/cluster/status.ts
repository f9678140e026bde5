/** What each node of a local cluster is doing: role, replication state and lag. */
import { NODE_POSITION } from '../tag/queries.ts'
import { resolve } from 'node:path'
import postgres from 'postgres'
import { DEFAULT_CLUSTER_DIR } from '../tag/descriptor.ts'
import { redactUrl } from '../tag/errors.ts'
import { sqlText } from '../ops/sqlfiles.ts'
import { type ClusterState, nodePid, nodeUrl, requireState } from './local.ts'
import { withPatroniRoles } from './ha/run.ts'

export interface ServerStatus {
  name: string
  /** The role the server reports (pg_is_in_recovery), or the recorded one when it is down. */
  role: 'leader' | 'replica'
  port: number
  url: string
  pid: number | null
  /** leader, or the walsender state of a replica (streaming, catchup, ...), or stopped / down. */
  state: string
  lagBytes: number | null
  lagMs: number | null
}

export interface ClusterStatus {
  dir: string
  nodes: ServerStatus[]
  /** Every node runs and every replica streams. */
  healthy: boolean
}

/** Asks every node of the cluster in `dir`; a node that does not answer is `down`. */
export async function status(dirOption?: string): Promise<ClusterStatus> {
  const dir = resolve(dirOption ?? DEFAULT_CLUSTER_DIR)
  const stored = requireState(dir)
  // Patroni moves the leadership by itself: ask it who leads now.
  const state = stored.ha ? await withPatroniRoles(stored) : stored
  const replication = await leaderView(dir, state)
  const nodes = await Promise.all(state.nodes.map((node) => nodeStatus(dir, state, node, replication)))
  const healthy = nodes.every((node) => node.state === 'leader' || node.state === 'streaming')
  return { dir, nodes, healthy }
}

type ReplicationRow = Record<string, unknown>

/** The leader's pg_stat_replication joined with its slots, keyed by application_name. */
async function leaderView(dir: string, state: ClusterState): Promise<Map<string, ReplicationRow> | null> {
  const leader = state.nodes.find((node) => node.role === 'leader')
  if (!leader || !nodePid(dir, leader.name)) return null
  const sql = postgres(nodeUrl(state, leader), { max: 1, onnotice: () => {}, connect_timeout: 3 })
  try {
    const rows = await sql.unsafe(sqlText('queries/replication-state.sql'))
    return new Map(rows.filter((row) => row.application_name).map((row) => [row.application_name as string, row]))
  } catch {
    return null
  } finally {
    await sql.end({ timeout: 2 })
  }
}

async function nodeStatus(
  dir: string,
  state: ClusterState,
  node: ClusterState['nodes'][number],
  replication: Map<string, ReplicationRow> | null,
): Promise<ServerStatus> {
  const url = nodeUrl(state, node)
  const base: ServerStatus = {
    name: node.name,
    role: node.role,
    port: node.port,
    url: redactUrl(url),
    pid: nodePid(dir, node.name),
    state: 'down',
    lagBytes: null,
    lagMs: null,
  }
  if (!base.pid) return base
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 3 })
  try {
    const [position] = await sql.unsafe(NODE_POSITION)
    if (!position.in_recovery) return { ...base, role: 'leader', state: 'leader', lagBytes: 0, lagMs: 0 }
    const row = replication?.get(node.name)
    return {
      ...base,
      role: 'replica',
      state: row ? String(row.state) : 'stopped',
      lagBytes: row ? Number(row.replay_lag_bytes) : null,
      lagMs: row ? Math.round(Number(row.replay_lag_ms)) : null,
    }
  } catch {
    return base
  } finally {
    await sql.end({ timeout: 2 })
  }
}
