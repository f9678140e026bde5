/**
 * One node of the cluster as the sql tag sees it: a postgres.js pool (its
 * lanes run routed statements; transactions, reserve() and COPY use the
 * rest), a one-connection client for the monitor (so health checks do not
 * queue behind a busy pool), and what we know of its health.
 */
import { connect as connectSocket } from 'node:net'
import postgres from 'postgres'
import { redactMessage, redactUrl } from './errors.ts'
import { authenticationFailure } from './failures.ts'
import type { FollowProblem } from './follow.ts'
import { settledWithin } from './health.ts'
import type { NodeLanes } from './lanes.ts'
import type { NormalizedOptions } from './options.ts'
import type { PoolOptions } from './pool-options.ts'
import { guardTransactions, type PgQuery } from './postgres-internals.ts'

export type { PgQuery } from './postgres-internals.ts'

/**
 * healthy: may serve reads; retired: too far behind (lag); banned / down:
 * does not answer; a FollowProblem: answers, but does not follow the leader
 * (lib/tag/follow.ts), so it serves no reads whatever its lag.
 */
export type NodeState = 'healthy' | 'retired' | 'banned' | 'down' | FollowProblem

/** Consecutive failures after which a node counts as down rather than banned. */
const DOWN_AFTER_FAILURES = 3

/**
 * Seconds before a lane's connection reconnects after one closed with an
 * error. postgres.js's own back-off grows with every connection of a pool
 * that closed so (3^n/100 s, up to 20 s): once a replica's connections were
 * all terminated, a new lane waited up to 20 s, past its open timeout, and a
 * healthy replica was banned. Lanes open only when the router asks, and the
 * router paces a failing node itself (bans with back-off, monitor checks).
 */
function laneReconnectDelay(retries: number): number {
  return Math.min(0.05 * retries, 0.5)
}

export class ClusterNode {
  /**
   * What identifies the server: its `cluster_name` setting, learned at its
   * first answer, else host:port from its URL. Not its place in the
   * descriptor, which a failover changes; once learned it stays.
   */
  name: string
  /** Whether the monitor has looked for a cluster_name yet (a name is learned once). */
  named = false
  readonly url: string
  readonly safeUrl: string
  readonly weight: number
  /** The user's pool: transactions, reserve(), COPY, listen, and every postgres.js door that needs a connection of its own. */
  readonly pool: postgres.Sql
  /**
   * The lanes' pool, apart from the user's: postgres.js 3.4.9 hands a newly
   * opened connection to whichever reserve() has waited longest, so a lane
   * opening beside a user's reserve() could take its connection, and the
   * user's would wait for a connection that lanes never give back.
   */
  readonly lanePool: postgres.Sql
  readonly monitor: postgres.Sql
  /** The function catalog's reads (shared per process like the monitor's, and never keeping it alive). */
  readonly catalogClient: postgres.Sql
  /**
   * Where a session stands after a statement (its position), asked on a
   * client like the monitor's but never coalesced: an answer to a question
   * asked before the statement ended could predate its commit. Not on the
   * pool: a question there could wait for a connection the user holds (a
   * reserved one with `max: 1`), or be written behind a COPY or into the
   * gap of a statement postgres.js re-prepares, and take its answer.
   */
  readonly positionClient: postgres.Sql
  /** Connections reserved for routed statements; set by the router. */
  lanes!: NodeLanes
  /** The pool's own query handler and canceller, taken from an unexecuted query. */
  readonly handler: PgQuery['handler']
  readonly canceller: unknown

  /** From the last successful check: is it a standby? null before the first one. */
  inRecovery: boolean | null = null
  /** pg_control_system().system_identifier: which cluster the server belongs to. */
  systemId: string | null = null
  /** The timeline it writes (leader) or receives (replica). */
  timeline: number | null = null
  /** The leader's pg_current_wal_lsn() at its last check (null on replicas). */
  currentLsn: bigint | null = null
  /**
   * Why it does not follow the leader, or null when the last check with the
   * leader answering found it following. A replica serves reads only once
   * a check confirmed it (`followChecked`), so a node never seen to follow
   * (a fenced old leader started by hand) serves none, not even at start.
   */
  followProblem: FollowProblem | null = null
  followDetail: string | null = null
  followChecked = false
  /**
   * A failure since the monitor last judged it: what it said before (lag,
   * upstream) may be out of date, so it serves no read until a round has
   * looked at it again, even once its connections answer.
   */
  verdictDue = false
  replayLsn: bigint | null = null
  receiveLsn: bigint | null = null
  lagBytes = 0
  lagMs = 0
  retired = false
  /** Why Patroni's view keeps this node out of the reads (lib/tag/patroni.ts), or null. */
  heldOut: string | null = null
  failures = 0
  bannedUntil = 0
  lastError: string | null = null
  /** The error behind `lastError`, as the driver raised it: the `cause` of what pgfollow throws for this node. */
  lastFailure: unknown = null
  /** The last failure was a refused login: a configuration problem, not an outage. */
  loginRefused = false
  /**
   * When the server last answered anything (a statement, an SQL error, a
   * health check): alive, if busy. Statements only count `answers`; the
   * router's sweeper turns new answers into a time (no clock read per statement).
   */
  lastAnsweredAt = 0
  answers = 0
  answersSeen = 0

  /** A replay-position query in flight, shared by every session waiting on this node. */
  refreshing: Promise<void> | null = null

  inFlight = 0
  /** Statements answered (outside transactions). */
  served = 0
  /** Transactions committed. */
  transactions = 0
  errors = 0

  constructor(url: string, weight: number, options: NormalizedOptions, pools: PoolOptions, name?: string) {
    this.name = name ?? hostAndPort(url)
    // A name given (a Patroni member's) is kept; otherwise the server's cluster_name replaces host:port.
    this.named = name !== undefined
    this.url = url
    this.safeUrl = redactUrl(url)
    this.weight = weight
    // Known once the pool exists (the guard wraps it); the pool's onclose needs it before.
    let closedTransaction = (_id: number): void => {}
    const transactionClosed = (id: number) => closedTransaction(id)
    // Lanes take up to inFlight connections of their own pool; transactions, reserve() and COPY keep postgres.js's own max.
    this.pool = pools.pool(url, { onclose: transactionClosed })
    this.lanePool = pools.pool(url, { max: options.inFlight, onclose: (id) => this.lanes?.closed(id), backoff: laneReconnectDelay })
    closedTransaction = guardTransactions(this.pool)
    // The monitor is pgfollow's own: none of the user's hooks, types or transforms,
    // but the same way to reach the server (TLS, socket).
    const { ssl, socket, path, keep_alive, idle_timeout } = options.postgres as Record<string, never>
    const reach = definedOnly({ ssl, socket, path, keep_alive, idle_timeout })
    this.monitor = acquireMonitor(url, options.connectTimeout / 1000, reach, 'pgfollow-monitor')
    this.catalogClient = acquireMonitor(url, options.connectTimeout / 1000, reach, 'pgfollow-catalog')
    this.positionClient = acquireMonitor(url, options.connectTimeout / 1000, reach, 'pgfollow-position', false)
    const probe = this.pool`` as unknown as PgQuery
    this.handler = probe.handler
    this.canceller = probe.canceller
  }

  /** May serve reads: seen to follow the leader, not retired, not held out by Patroni, not failing. */
  get available(): boolean {
    return this.followChecked && !this.verdictDue && this.followProblem === null && !this.retired && this.heldOut === null && this.failures === 0
  }

  get state(): NodeState {
    if (this.failures >= DOWN_AFTER_FAILURES) return 'down'
    if (this.failures > 0) return 'banned'
    if (this.followProblem) return this.followProblem
    return this.retired || this.heldOut !== null ? 'retired' : 'healthy'
  }

  /**
   * A failed connection or check: ban for an exponentially growing time. The
   * ban grows with each attempt that fails once the last ban ran out, not
   * with each statement that reports the same outage: twenty connections
   * closed at once are one failure, not a 5 s ban.
   */
  fail(error: unknown, ban: { base: number; max: number }): void {
    const now = Date.now()
    if (this.failures === 0 || now >= this.bannedUntil) {
      this.failures++
      this.bannedUntil = now + Math.min(ban.base * 2 ** (this.failures - 1), ban.max)
    }
    this.verdictDue = true
    this.errors++
    this.lastError = redactMessage(error, this.url)
    this.lastFailure = error
    this.loginRefused = authenticationFailure(error)
  }

  /** A successful check lifts any ban. */
  succeed(): void {
    this.lastAnsweredAt = Date.now()
    this.failures = 0
    this.bannedUntil = 0
    this.lastError = null
    this.lastFailure = null
    this.loginRefused = false
  }

  /**
   * The lanes' pool ends once what runs on them settled (or `timeout` ran
   * out), and then at once: postgres.js 3.4.9's end() waits for good on a
   * connection that closed with an error under a statement (it keeps that
   * statement as current), as a lane's does when its node drops it.
   */
  async #endLanes(timeout?: number | null): Promise<void> {
    const lanes = this.lanes
    if (lanes && timeout == null) await lanes.settled()
    else if (lanes && timeout !== 0) await settledWithin(lanes.settled(), timeout! * 1000)
    await this.lanePool.end({ timeout: 0 })
  }

  /** Whether the monitor should check it now (banned nodes wait out their back-off). */
  dueForCheck(now: number): boolean {
    return this.failures === 0 || now >= this.bannedUntil
  }

  /** Ends the pool as postgres.js would (`timeout` in seconds; none: wait for statements in flight). */
  async end(timeout?: number | null): Promise<void> {
    this.lanes?.end()
    // The monitor's checks are bounded by their own timeouts: nothing of the user's waits on them.
    await Promise.all([
      this.pool.end({ timeout: timeout ?? undefined }),
      this.#endLanes(timeout),
      releaseMonitor(this.monitor),
      releaseMonitor(this.catalogClient),
      releaseMonitor(this.positionClient),
    ])
  }
}

/**
 * Monitor clients, one per server and settings, shared by every `connect()`
 * in the process: 200 tags on one cluster hold one monitor connection per
 * node, not 200 (max_connections is 100 by default).
 */
const monitors = new Map<string, { sql: postgres.Sql; users: number }>()
const monitorKeys = new WeakMap<postgres.Sql, string>()

function acquireMonitor(
  url: string,
  connectTimeoutSeconds: number,
  reach: Record<string, unknown>,
  application: string,
  coalesce = true,
): postgres.Sql {
  // A user's own socket factory or TLS objects make a client of its own (they may differ per tag).
  const shareable = Object.values(reach).every((value) => value === undefined || typeof value !== 'object' && typeof value !== 'function')
  const key = shareable ? JSON.stringify([url, connectTimeoutSeconds, reach, application]) : `${url}#${Math.random()}`
  let entry = monitors.get(key)
  if (!entry) {
    const sql = postgres(url, {
      ...reach,
      max: 1,
      onnotice: () => {},
      fetch_types: false,
      connect_timeout: connectTimeoutSeconds,
      // No lifetime timer either: a timer would hold the process open as a socket would.
      max_lifetime: null,
      connection: { application_name: application },
      // The monitor never keeps the process alive: its socket is unref'd (postgres.js writes once it connects).
      socket: (reach.socket as never) ?? (({ host, port, path }: { host: string[]; port: number[]; path?: string }) => {
        const socket = path ? connectSocket(path) : connectSocket(port[0], host[0])
        socket.unref?.()
        return socket
      }),
    } as postgres.Options<Record<string, postgres.PostgresType>>)
    entry = { sql: coalesce ? coalescing(sql) : sql, users: 0 }
    monitors.set(key, entry)
    monitorKeys.set(entry.sql, key)
  }
  entry.users++
  return entry.sql
}

async function releaseMonitor(sql: postgres.Sql): Promise<void> {
  const key = monitorKeys.get(sql)!
  const entry = monitors.get(key)
  if (!entry || --entry.users > 0) return
  monitors.delete(key)
  await sql.end({ timeout: 1 })
}

/**
 * The client with `unsafe(text)` shared while in flight: the tags of one
 * process ask each node one question per round, however many there are.
 */
function coalescing(sql: postgres.Sql): postgres.Sql {
  const inFlight = new Map<string, Promise<unknown>>()
  const unsafe = (text: string, ...rest: unknown[]) => {
    if (rest.length > 0) return (sql.unsafe as (...args: unknown[]) => unknown)(text, ...rest)
    let answer = inFlight.get(text)
    if (!answer) {
      answer = Promise.resolve(sql.unsafe(text)).finally(() => inFlight.delete(text))
      inFlight.set(text, answer)
    }
    return answer
  }
  const tag = (...args: unknown[]) => (sql as unknown as (...a: unknown[]) => unknown)(...args)
  return Object.assign(tag, { unsafe, end: sql.end }) as unknown as postgres.Sql
}

function definedOnly(options: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined))
}

/** host:port of a postgres URL (the first host of a multi-host one), the name of a node until it says its own. */
export function hostAndPort(url: string): string {
  const match = /^[a-z]+:\/\/(?:[^@/]*@)?([^/?,]*)/i.exec(url)
  const host = match?.[1] ?? ''
  if (host === '') return 'localhost:5432'
  return /:\d+$/.test(host) ? host : `${host}:5432`
}
