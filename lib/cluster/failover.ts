/**
 * "What happens if the leader goes down?" — failover of the local cluster.
 * Fence the old leader (stopped, and standby.signal in its data dir, so it
 * can never start as a second leader), promote the most advanced replica
 * with pg_promote(), create the other replicas' slots on it, repoint them
 * (primary_conninfo + reload), and rewrite the state and the descriptor.
 * The fenced node comes back as a replica of the new leader with the next
 * `up`, by re-cloning: these binaries have no pg_rewind.
 *
 * Clients need no restart: the sql tag finds the node that is no longer in
 * recovery by itself and moves writes there.
 */
import { NODE_POSITION } from '../tag/queries.ts'
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import postgres from 'postgres'
import { DEFAULT_CLUSTER_DIR } from '../tag/descriptor.ts'
import { ClusterError, ConfigError } from '../tag/errors.ts'
import { formatLsn, lsnDistance, parseLsn } from '../tag/lsn.ts'
import { slotName, synchronousStandbyNames } from '../topology.ts'
import { reachableBinaries } from './reachable.ts'
import { createSlot } from './clone.ts'
import {
  cloneReplica,
  type ClusterState,
  descriptorOf,
  isRunning,
  leaderOf,
  type LocalNode,
  nodePaths,
  nodeUrl,
  requireState,
  waitForStreaming,
  writeStandbyConfig,
  writeState,
} from './local.ts'
import { startServer, stopServer } from './process.ts'
import { giveTo, serverUser } from './user.ts'

export interface FailoverOptions {
  dir?: string
  /** The replica to promote; default the most advanced one (most WAL received). */
  promote?: string
  /** How long a repointed replica may take to stream from the new leader before it is re-cloned. */
  streamTimeoutMs?: number
  onProgress?: (message: string) => void
}

export interface FailoverResult {
  dir: string
  /** The old leader, now fenced. */
  previous: string
  /** Whether the old leader was still running (it was stopped cleanly, so replicas got all its WAL). */
  previousWasRunning: boolean
  promoted: string
  /** The new leader's WAL position right after promotion. */
  promotedLsn: string
  /** WAL positions the replicas had received when one was chosen. */
  candidates: { name: string; receivedLsn: string | null }[]
  /** Replicas now streaming from the new leader (repointed in place). */
  repointed: string[]
  /** Replicas that had WAL the new leader never got, re-cloned from it. */
  recloned: string[]
  /** Replicas that were stopped: configured to follow the new leader when they start. */
  configured: string[]
  seconds: number
  descriptor: { leader: string; replicas: string[] }
}

interface PromotionCandidate {
  node: LocalNode
  receivedLsn: bigint | null
}

/** Promotes a replica of the local cluster in `dir` and makes the rest follow it. */
export async function failover(options: FailoverOptions = {}): Promise<FailoverResult> {
  const started = performance.now()
  const dir = resolve(options.dir ?? DEFAULT_CLUSTER_DIR)
  const progress = options.onProgress ?? (() => {})
  const state = requireState(dir)
  const oldLeader = leaderOf(state)
  const replicas = state.nodes.filter((node) => node.role === 'replica' && !node.fenced)
  if (options.promote !== undefined) {
    const named = state.nodes.find((node) => node.name === options.promote)
    if (!named) {
      throw new ConfigError(
        `--promote ${options.promote}: the cluster has no node of that name (it has ${state.nodes.map((node) => node.name).join(', ')}).`,
      )
    }
    if (named === oldLeader) throw new ConfigError(`--promote ${options.promote}: that node is the leader already.`)
    if (!replicas.includes(named)) {
      throw new ConfigError(`--promote ${options.promote}: that node is fenced; bring it back with \`cluster.mjs up\` first.`)
    }
  }
  const running = replicas.filter((node) => isRunning(dir, node.name))
  if (running.length === 0) {
    throw new ClusterError('No replica is running, so none can be promoted. Start the cluster with `npx zx scripts/cluster.mjs up` first.')
  }

  // Fence first: two leaders, even for a moment, would split the history.
  const previousWasRunning = isRunning(dir, oldLeader.name)
  progress(
    previousWasRunning
      ? `stopping the leader (node ${oldLeader.name}) with a fast shutdown: replicas receive its last WAL`
      : `the leader (node ${oldLeader.name}) is down`,
  )
  await fence(dir, oldLeader)

  const candidates = await Promise.all(running.map((node) => receivedPosition(state, node)))
  const chosen = chooseCandidate(candidates, options.promote)
  const newLeader = chosen.node
  progress(`promoting ${newLeader.name} (received up to ${formatPosition(chosen.receivedLsn)})`)
  let promotedLsn: string
  try {
    promotedLsn = await promote(state, newLeader)
  } catch (error) {
    // Nothing changed hands: let the old leader start again as it was.
    unfence(dir, oldLeader)
    throw new ClusterError(
      `Promoting ${newLeader.name} failed, so the cluster was left as it was, with ${oldLeader.name} stopped; ` +
        `start it with \`npx zx scripts/cluster.mjs up\`. Cause: ${(error as Error).message}. See ${nodePaths(dir, newLeader.name).logFile}.`,
      { cause: error },
    )
  }

  newLeader.role = 'leader'
  oldLeader.role = 'replica'
  oldLeader.fenced = true
  // The descriptor names the new leader from now on, for every client that (re)reads it.
  writeState(dir, state)

  const others = replicas.filter((node) => node !== newLeader)
  const leaderUrl = nodeUrl(state, newLeader)
  const admin = postgres(leaderUrl, { max: 1, onnotice: () => {} })
  try {
    // Slots before repointing, so nothing a replica needs is recycled meanwhile.
    for (const node of others) await createSlot(admin, slotName(node.name))
    if (state.synchronous !== 'off') {
      const names = state.nodes.filter((node) => node !== newLeader).map((node) => node.name)
      await admin.unsafe(`alter system set synchronous_standby_names = '${synchronousStandbyNames(state.synchronous, names).replace(/'/g, "''")}'`)
      await admin`select pg_reload_conf()`
    }
  } finally {
    await admin.end({ timeout: 5 })
  }

  const repointed: string[] = []
  const recloned: string[] = []
  const configured: string[] = []
  const user = serverUser()
  for (const node of others) {
    const candidate = candidates.find((c) => c.node === node)
    const { dataDir } = nodePaths(dir, node.name)
    if (!candidate) {
      writeStandbyConfig(dataDir, state, node, newLeader)
      configured.push(node.name)
      continue
    }
    // A replica that received WAL the new leader never got has a history the new leader does not share.
    const diverged = candidate.receivedLsn !== null && chosen.receivedLsn !== null && candidate.receivedLsn > chosen.receivedLsn
    if (!diverged) {
      progress(`repointing ${node.name} to ${newLeader.name}`)
      writeStandbyConfig(dataDir, state, node, newLeader)
      await reload(state, node)
      try {
        await waitForStreaming(leaderUrl, [node.name], options.streamTimeoutMs ?? 15_000)
        repointed.push(node.name)
        continue
      } catch {
        progress(`${node.name} does not stream from ${newLeader.name}: re-cloning it`)
      }
    } else {
      progress(`${node.name} is ${lsnDistance(chosen.receivedLsn, candidate.receivedLsn)} bytes ahead of ${newLeader.name}: re-cloning it`)
    }
    await stopServer(dataDir, 'fast')
    await cloneReplica(dir, state, node, user)
    await startServer({ binaries: reachableBinaries(user), user, dataDir, logFile: nodePaths(dir, node.name).logFile, name: node.name })
    await waitForStreaming(leaderUrl, [node.name], options.streamTimeoutMs ?? 15_000)
    recloned.push(node.name)
  }

  return {
    dir,
    previous: oldLeader.name,
    previousWasRunning,
    promoted: newLeader.name,
    promotedLsn,
    candidates: candidates.map((c) => ({ name: c.node.name, receivedLsn: c.receivedLsn === null ? null : formatPosition(c.receivedLsn) })),
    repointed,
    recloned,
    configured,
    seconds: Math.round((performance.now() - started) / 100) / 10,
    descriptor: descriptorOf(state),
  }
}

/**
 * Stops a node and makes its data dir a standby's: started by anyone, it
 * comes up read-only in recovery, never as a leader. `up` re-clones it.
 */
export async function fence(dir: string, node: LocalNode): Promise<void> {
  const { dataDir } = nodePaths(dir, node.name)
  await stopServer(dataDir, 'fast')
  if (existsSync(dataDir)) {
    const signal = join(dataDir, 'standby.signal')
    writeFileSync(signal, '', { mode: 0o600 })
    giveTo(serverUser(), signal)
  }
}

function unfence(dir: string, node: LocalNode): void {
  rmSync(join(nodePaths(dir, node.name).dataDir, 'standby.signal'), { force: true })
}

/** What a replica has received (flushed) from the leader: the most advanced one loses nothing. */
async function receivedPosition(state: ClusterState, node: LocalNode): Promise<PromotionCandidate> {
  const client = postgres(nodeUrl(state, node), { max: 1, onnotice: () => {}, connect_timeout: 3 })
  try {
    const [row] = await client.unsafe(NODE_POSITION)
    return { node, receivedLsn: parseLsn(row.receive_lsn) ?? parseLsn(row.replay_lsn) }
  } catch {
    return { node, receivedLsn: null }
  } finally {
    await client.end({ timeout: 2 })
  }
}

function chooseCandidate(candidates: PromotionCandidate[], wanted?: string): PromotionCandidate {
  if (wanted !== undefined) {
    const named = candidates.find((c) => c.node.name === wanted)
    if (!named) {
      throw new ClusterError(`--promote ${wanted}: that replica is not running, so it cannot be promoted. Start it with \`cluster.mjs up\`.`)
    }
    if (named.receivedLsn === null) throw new ClusterError(`--promote ${wanted}: that replica does not answer.`)
    return named
  }
  const answering = candidates.filter((c) => c.receivedLsn !== null)
  if (answering.length === 0) {
    throw new ClusterError('No running replica answers, so none can be promoted: see their postgres.log in the cluster dir.')
  }
  // Most WAL received wins; on a tie the first in the cluster's order, so the choice is predictable.
  return answering.reduce((best, c) => (c.receivedLsn! > best.receivedLsn! ? c : best))
}

async function promote(state: ClusterState, node: LocalNode): Promise<string> {
  const client = postgres(nodeUrl(state, node), { max: 1, onnotice: () => {}, connect_timeout: 5 })
  try {
    // wait => true: returns once the node accepts writes (or false after 60 s).
    const [{ promoted }] = await client`select pg_promote(true, 60) as promoted`
    if (!promoted) throw new ClusterError(`${node.name} did not finish promotion within 60 s`)
    const [row] = await client`select pg_is_in_recovery() as in_recovery, pg_current_wal_lsn()::text as lsn`
    if (row.in_recovery) throw new ClusterError(`${node.name} is still in recovery after pg_promote()`)
    return row.lsn
  } finally {
    await client.end({ timeout: 5 })
  }
}

/** Applies a changed primary_conninfo: PostgreSQL 13+ restarts the WAL receiver on reload. */
async function reload(state: ClusterState, node: LocalNode): Promise<void> {
  const client = postgres(nodeUrl(state, node), { max: 1, onnotice: () => {}, connect_timeout: 3 })
  try {
    await client`select pg_reload_conf()`
  } finally {
    await client.end({ timeout: 2 })
  }
}

function formatPosition(lsn: bigint | null): string {
  return lsn === null ? 'unknown' : formatLsn(lsn)
}
