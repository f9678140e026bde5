/**
 * Replication lag as an operator sees it (scripts/lagcheck.mjs): the
 * leader's own view of each replica (sql/queries/replication-state.sql: per
 * slot, sent/flushed/replayed bytes behind, replay lag in ms that is 0 when
 * caught up, WAL retained by the slot) joined with what each replica in the
 * descriptor says about itself, so a replica that is not connected to the
 * leader still shows up: `stopped` when it runs but does not stream, `down`
 * when it does not answer.
 *
 * Replicas are joined to the leader's rows by their slot (`primary_slot_name`,
 * asked of the replica), else by application_name = cluster_name. Names come
 * from `cluster_name` (the local cluster sets it to the node name), else the
 * application_name, else the descriptor position (leader, replica1, ...).
 */
import { NODE_POSITION } from '../tag/queries.ts'
import postgres from 'postgres'
import type { ClusterDescriptor } from '../tag/descriptor.ts'
import { redactMessage, redactUrl } from '../tag/errors.ts'
import { withTimeout } from '../tag/health.ts'
import { sqlText } from './sqlfiles.ts'

/** A replica's state: the walsender's (streaming, catchup, startup, backup, stopping), or ours. */
export type ReplicaState = 'streaming' | 'catchup' | 'startup' | 'backup' | 'stopping' | 'stopped' | 'down' | 'leader'

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

/** The verdict of a monitoring check, Nagios-style: 0 fine, 1 a node is down, 2 lag beyond a limit. */
export interface LagVerdict {
  exitCode: 0 | 1 | 2
  problems: string[]
}

interface NodeAnswer {
  index: number
  url: string
  position: Record<string, any> | null
  identity: Record<string, any> | null
  error: string | null
}

type SlotRow = Record<string, any>

const num = (value: unknown): number | null => (value === null || value === undefined ? null : Number(value))

/**
 * Keeps one connection per node open between looks, so `--interval` does
 * not reconnect every second. A node that stops answering is retried at
 * each look (postgres.js reconnects by itself).
 */
export class LagProbe {
  readonly descriptor: ClusterDescriptor
  readonly #timeoutMs: number
  readonly #clients: postgres.Sql[]
  /** What each node said about itself last time: names and slots of replicas that are down now. */
  readonly #known = new Map<string, Record<string, any>>()

  constructor(descriptor: ClusterDescriptor, options: { timeoutMs?: number } = {}) {
    this.descriptor = descriptor
    this.#timeoutMs = options.timeoutMs ?? 3_000
    const seconds = Math.max(1, Math.ceil(this.#timeoutMs / 1000))
    this.#clients = [descriptor.leader, ...descriptor.replicas].map((url) =>
      postgres(url, {
        max: 1,
        onnotice: () => {},
        fetch_types: false,
        connect_timeout: seconds,
        idle_timeout: 0,
        connection: { application_name: 'pgfollow-lagcheck' },
      })
    )
  }

  /** Asks every node at once, then the leader for its view of the replicas. */
  async snapshot(): Promise<LagSnapshot> {
    const time = new Date().toISOString()
    const urls = [this.descriptor.leader, ...this.descriptor.replicas]
    const answers = await Promise.all(urls.map((url, index) => this.#ask(index, url)))
    const leaderAnswer = pickLeader(answers)
    let slots: SlotRow[] = []
    let leaderError: string | null = leaderAnswer ? null : firstError(answers[0]) ?? 'no node accepts writes (every node is in recovery)'
    if (leaderAnswer) {
      try {
        slots = [
          ...(await withTimeout(this.#clients[leaderAnswer.index].unsafe(sqlText('queries/replication-state.sql')), this.#timeoutMs, 'the leader')),
        ]
      } catch (error) {
        leaderError = redactMessage(error, leaderAnswer.url)
      }
    }
    const claimed = new Set<SlotRow>()
    // With no leader found, the descriptor's leader is reported in the leader row, not among the replicas.
    const others = answers.filter((answer) => answer !== (leaderAnswer ?? answers[0]))
    // Reachable replicas first: they say which slot is theirs; a down one may then take the one slot left.
    const replicas = new Map<NodeAnswer, ReplicaLag>()
    for (const answer of others.filter((a) => a.position)) {
      replicas.set(answer, this.#replicaLag(answer, slots, claimed, leaderAnswer !== null && leaderError === null))
    }
    for (const answer of others.filter((a) => !a.position)) replicas.set(answer, this.#replicaLag(answer, slots, claimed, false))

    const leader: LeaderLag = leaderAnswer
      ? {
        name: nodeName(leaderAnswer, null),
        url: redactUrl(leaderAnswer.url),
        state: leaderError ? 'down' : 'leader',
        lsn: leaderAnswer.position?.current_lsn ?? null,
        connectedReplicas: slots.filter((row) => row.active && row.state !== 'stopped').length,
        moved: leaderAnswer.index !== 0,
        error: leaderError,
      }
      : {
        name: nodeName(answers[0], null, this.#known.get(answers[0].url)),
        url: redactUrl(urls[0]),
        state: 'down',
        lsn: null,
        connectedReplicas: 0,
        moved: false,
        error: leaderError,
      }
    return {
      time,
      leader,
      replicas: others.map((answer) => replicas.get(answer)!),
      orphanSlots: slots
        .filter((row) => !claimed.has(row))
        .map((row) => ({ slot: String(row.slot_name), active: Boolean(row.active), retainedBytes: num(row.retained_bytes) })),
    }
  }

  async #ask(index: number, url: string): Promise<NodeAnswer> {
    const client = this.#clients[index]
    try {
      const [[position], [identity]] = await withTimeout(
        Promise.all([client.unsafe(NODE_POSITION), client.unsafe(sqlText('queries/node-identity.sql'))]),
        this.#timeoutMs,
        redactUrl(url),
      )
      this.#known.set(url, identity)
      return { index, url, position, identity, error: null }
    } catch (error) {
      return { index, url, position: null, identity: null, error: redactMessage(error, url) }
    }
  }

  #replicaLag(answer: NodeAnswer, slots: SlotRow[], claimed: Set<SlotRow>, leaderView: boolean): ReplicaLag {
    const identity = answer.identity ?? this.#known.get(answer.url) ?? null
    const row = findSlot(identity, slots, claimed, answer.position === null)
    if (row) claimed.add(row)
    const base: ReplicaLag = {
      name: nodeName(answer, row, identity),
      url: redactUrl(answer.url),
      state: 'down',
      slot: row ? String(row.slot_name) : identity?.slot_name || null,
      replayLsn: answer.position?.replay_lsn ?? null,
      syncState: null,
      lagBytes: null,
      sentLagBytes: null,
      flushLagBytes: null,
      lagMs: null,
      retainedBytes: row ? num(row.retained_bytes) : null,
      upstream: null,
      error: answer.error,
    }
    if (!answer.position) return base
    if (!answer.position.in_recovery) return { ...base, state: 'leader', error: 'listed as a replica but accepts writes: a second leader' }
    const upstream = identity?.sender_host ? `${identity.sender_host}:${identity.sender_port}` : null
    const streams = row && row.active && row.state !== 'stopped'
    if (!leaderView || !streams) return { ...base, state: 'stopped', upstream }
    return {
      ...base,
      state: row.state as ReplicaState,
      syncState: row.sync_state ?? null,
      lagBytes: num(row.replay_lag_bytes),
      sentLagBytes: num(row.sent_lag_bytes),
      flushLagBytes: num(row.flush_lag_bytes),
      lagMs: row.replay_lag_ms === null ? null : Math.round(Number(row.replay_lag_ms) * 10) / 10,
      upstream,
    }
  }

  async end(): Promise<void> {
    await Promise.all(this.#clients.map((client) => client.end({ timeout: 1 })))
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
    else if (replica.state === 'stopped' && snapshot.leader.state !== 'down') down.push(`${replica.name} runs but does not stream from the leader`)
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

/** The descriptor's leader when it leads, else the first node that is not in recovery. */
function pickLeader(answers: NodeAnswer[]): NodeAnswer | null {
  const writable = answers.filter((answer) => answer.position && !answer.position.in_recovery)
  return writable.find((answer) => answer.index === 0) ?? writable[0] ?? null
}

/**
 * The leader's slot row of a replica: by its primary_slot_name, else its
 * cluster_name as application_name. A replica that is down and never
 * answered may take the one unclaimed inactive slot, if exactly one is left.
 */
function findSlot(identity: Record<string, any> | null, slots: SlotRow[], claimed: Set<SlotRow>, down: boolean): SlotRow | null {
  const free = slots.filter((row) => !claimed.has(row))
  if (identity?.slot_name) {
    const bySlot = free.find((row) => row.slot_name === identity.slot_name)
    if (bySlot) return bySlot
  }
  if (identity?.cluster_name) {
    const byName = free.find((row) => row.application_name === identity.cluster_name)
    if (byName) return byName
  }
  if (down && !identity) {
    const inactive = free.filter((row) => !row.active)
    if (inactive.length === 1) return inactive[0]
  }
  return null
}

function nodeName(answer: NodeAnswer, row: SlotRow | null, identity: Record<string, any> | null = answer.identity): string {
  if (identity?.cluster_name) return String(identity.cluster_name)
  if (row?.application_name) return String(row.application_name)
  if (row?.slot_name) return String(row.slot_name).replace(/^pgfollow_/, '')
  return answer.index === 0 ? 'leader' : `replica${answer.index}`
}

function firstError(answer: NodeAnswer | undefined): string | null {
  return answer?.error ?? null
}
