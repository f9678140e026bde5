/**
 * A causal session's position: the WAL position its reads must not go back
 * behind. Writes raise it to the leader's insert LSN after commit; reads
 * raise it to what the serving node had replayed, so the next read never
 * sees an older state, whichever node serves it.
 *
 * Its token is bound to the cluster it came from: `<lsn>@<cluster>.<timeline>`,
 * e.g. `0/16B3748@5f3a9c1e.1` (a short form of the system identifier, and
 * the leader's timeline). A resumed token is checked against the leader at
 * the session's first statement; one the leader cannot honour (another
 * cluster, a later timeline, a position it never reached) is reset with a
 * `warning` event, rather than pinning the session
 * to the leader for good or failing an application whose cookie outlived a
 * cluster. A token that is no token at all is a ConfigError.
 */
import { ConfigError } from './errors.ts'
import { formatLsn, maxLsn, parseLsn } from './lsn.ts'
import type { ClusterNode } from './node.ts'

/** What a session needs of the router to bind and check its token. */
export interface TokenHome {
  readonly leader: ClusterNode
  /** One monitor round: the leader's identity is known once it resolves (when it answers). */
  refresh(): Promise<void>
  emit(event: string, payload: unknown): boolean
}

/** A parsed token: the position, and the cluster it was issued by (absent in the plain-LSN tokens of earlier versions). */
export interface SessionToken {
  lsn: bigint
  cluster: string | null
  timeline: number | null
}

const LEADER_LSN = 'select pg_current_wal_insert_lsn()::text as lsn, pg_current_wal_flush_lsn()::text as flushed'
const TOKEN = /^([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})(?:@([0-9a-f]{8})\.(\d{1,10}))?$/
/** Console warnings already printed, one per kind: a rebuilt cluster meets every old cookie. */
const warnedOnConsole = new Set<string>()

export class SessionPosition {
  /** What the session's own statements raised it to. */
  #position: bigint | null = null
  /** Where the resumed token put it (the leader's position instead, once the token is found wanting). */
  #floor: bigint | null
  #pending = new Set<Promise<unknown>>()
  readonly #home: TokenHome | null
  /** A resumed token not yet checked against the leader. */
  #unchecked: SessionToken | null
  #checking: Promise<void> | null = null

  constructor(after?: string, home?: TokenHome) {
    this.#home = home ?? null
    this.#unchecked = after === undefined ? null : parseToken(after)
    this.#floor = this.#unchecked?.lsn ?? null
  }

  /** Raises the position when `lsn` is ahead (a position never moves back). */
  raise(lsn: bigint | null): void {
    this.#position = maxLsn(this.#position, lsn)
  }

  /** Tracks a position still on its way, so the next statement waits for it. */
  track(promise: Promise<bigint | null>): Promise<void> {
    const raised = promise.then(
      (lsn) => this.raise(lsn),
      () => {},
    )
    this.#pending.add(raised)
    raised.finally(() => this.#pending.delete(raised))
    return raised
  }

  /** The position once the resumed token is checked and every tracked update has landed. */
  async settled(): Promise<bigint | null> {
    if (this.#unchecked && this.#home) {
      this.#checking ??= this.#check(this.#unchecked, this.#home).finally(() => (this.#checking = null))
      await this.#checking
    }
    while (this.#pending.size > 0) await Promise.all(this.#pending)
    return this.current
  }

  get current(): bigint | null {
    return maxLsn(this.#floor, this.#position)
  }

  /** Short, serialisable, bound to the cluster: `0/16B3748@5f3a9c1e.1` (the plain LSN while the leader is unknown). */
  get token(): string {
    const lsn = formatLsn(this.current ?? 0n)
    const leader = this.#home?.leader
    if (!leader?.systemId || leader.timeline === null || leader.inRecovery !== false) return lsn
    return `${lsn}@${shortClusterId(leader.systemId)}.${leader.timeline}`
  }

  /**
   * Can the leader honour the token? A leader that does not answer leaves
   * it unchecked (the next statement tries again). A token of another
   * cluster or a later timeline is dropped (it promised nothing about this
   * history); one past the leader's position is lowered to what the leader
   * has flushed, which keeps every write that exists visible.
   */
  async #check(token: SessionToken, home: TokenHome): Promise<void> {
    let leader = home.leader
    if (leader.systemId === null || leader.inRecovery !== false) {
      await home.refresh().catch(() => {})
      leader = home.leader
      if (leader.systemId === null || leader.inRecovery !== false || leader.failures > 0) return
    }
    let why: string | null = null
    let kind = ''
    if (token.cluster !== null && token.cluster !== shortClusterId(leader.systemId)) {
      why = 'it was issued by another cluster (or by this one before it was rebuilt or restored)'
      kind = 'cluster'
    } else if (token.timeline !== null && leader.timeline !== null && token.timeline > leader.timeline) {
      why = `it names timeline ${token.timeline}, which the leader (on timeline ${leader.timeline}) never had`
      kind = 'timeline'
    }
    let leaderLsn: bigint | null
    let flushed: bigint | null
    try {
      const [row] = await leader.monitor.unsafe(LEADER_LSN)
      leaderLsn = parseLsn(row.lsn)
      flushed = parseLsn(row.flushed)
    } catch {
      return // checked again by the next statement
    }
    if (leaderLsn === null) return
    if (why === null && token.lsn > leaderLsn) {
      why = `it names WAL position ${formatLsn(token.lsn)}, which the leader never reached (it stands at ${formatLsn(leaderLsn)})`
      kind = 'position'
    }
    this.#unchecked = null
    if (why === null) return
    // Replaced, not raised: the token's position is the one that cannot be honoured.
    // A token of another history promised nothing here; one past the leader is held to what the
    // leader has flushed (what replicas can reach): the session still sees at least what exists now.
    this.#floor = kind === 'position' ? flushed : null
    const message =
      `A session token was reset: ${why}. The session goes on from this cluster's present state; pass tokens of this cluster to keep read-your-writes across requests.`
    const detail = { message, reason: 'session-token', token: `${formatLsn(token.lsn)}${token.cluster ? `@${token.cluster}.${token.timeline}` : ''}` }
    if (!home.emit('warning', detail) && !warnedOnConsole.has(kind)) {
      warnedOnConsole.add(kind)
      console.warn(`pgfollow: ${message}`)
    }
  }
}

/** Parses a session token (bound, or a plain LSN from earlier versions); a bad one is a ConfigError, not a silent reset to zero. */
export function parseToken(token: string): SessionToken {
  const match = typeof token === 'string' ? TOKEN.exec(token) : null
  if (!match) {
    throw new ConfigError(`Not a pgfollow session token: ${JSON.stringify(token)?.slice(0, 40)}. Pass the value of \`session.token\` unchanged.`)
  }
  return { lsn: parseLsn(match[1])!, cluster: match[2] ?? null, timeline: match[3] === undefined ? null : Number(match[3]) }
}

/** Eight hex digits folded from the 64-bit system identifier: enough to tell clusters apart, short in a cookie. */
export function shortClusterId(systemId: string): string {
  const id = BigInt(systemId)
  return ((id >> 32n) ^ (id & 0xffffffffn)).toString(16).padStart(8, '0')
}
