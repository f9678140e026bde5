/**
 * The router decides where each statement runs and makes failures on the
 * way invisible where that is safe: a read that meets a dead, lagging or
 * read-only node is retried elsewhere; a write goes to the leader, and is
 * retried only when it surely never ran. It owns the nodes, the monitor and
 * the health events.
 */
import { EventEmitter } from 'node:events'
import { createPicker, type Picker } from './balance.ts'
import { FunctionCatalog } from './catalog.ts'
import { type Classification, classifyStatement, type StatementKind } from './classify.ts'
import { ConfigError, LeaderUnavailableError, NoReplicaError } from './errors.ts'
import { authenticationFailure, connectionLost, neverConnected, nodeUnreachable, readOnlyRefusal, retryableRead } from './failures.ts'
import { Monitor, unrefTimer, withTimeout } from './health.ts'
import { maxLsn, parseLsn } from './lsn.ts'
import { ClusterNode, type NodeState, type PgQuery } from './node.ts'
import type { NormalizedOptions } from './options.ts'
import { PendingStatements } from './pending.ts'
import { PoolOptions } from './pool-options.ts'
import { LEADER_POSITION, REPLICA_POSITION } from './queries.ts'
import type { SessionPosition } from './session.ts'
import { afterStream, streams } from './streams.ts'

/** Where a tag sends statements: by classification, or pinned. */
export interface RouteContext {
  intent: 'auto' | 'leader' | 'replica'
  session?: SessionPosition
}

/** A position no replica reaches: the session reads from the leader until it learns a real one. */
const UNREACHABLE_POSITION = (1n << 64n) - 1n
const MAX_CACHED_TEXTS = 5_000
const NOTHING_TRIED: readonly ClusterNode[] = []
const LEADER_ONLY: Classification = { kind: 'write', reason: 'a replica refused it as read-only (25006)' }

/**
 * One statement on its way, across retries. A class rather than an object
 * literal, and nothing else per statement is a literal either: V8 tracks
 * each literal's allocation site, and once a burst (100 statements queued
 * while the pools connect) finds most of a site's objects alive, it
 * allocates that site's objects in old space from then on. Dead jobs there
 * kept their statements and results alive through every young collection,
 * and the process ran a full mark-compact every few hundred milliseconds
 * (BENCHMARKS.md, "What the profiling found and fixed").
 */
class Job {
  readonly query: PgQuery
  readonly resolve: (value: unknown) => void
  readonly reject: (error: unknown) => void
  readonly ctx: RouteContext
  kind: StatementKind
  /** Nodes this statement ran on and failed (a few at most: an array beats a Set). */
  tried: readonly ClusterNode[] = NOTHING_TRIED
  leaderRetried = false

  constructor(query: PgQuery, ctx: RouteContext, kind: StatementKind) {
    this.query = query
    this.resolve = query.resolve
    this.reject = query.reject
    this.ctx = ctx
    this.kind = kind
  }
}

/** What `sql.status()` reports per node. */
export interface NodeStatus {
  name: string
  url: string
  role: 'leader' | 'replica'
  state: NodeState
  lagBytes: number
  lagMs: number
  inFlight: number
  served: number
  errors: number
  lastError: string | null
}

/** An error with a code the failure classes know. */
function timeoutError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code })
}

export class Router extends EventEmitter {
  readonly options: NormalizedOptions
  readonly nodes: ClusterNode[]
  /** The postgres.js options every node's pool shares; `sql.options` is its view. */
  readonly poolOptions: PoolOptions
  leader: ClusterNode
  /** postgres.js's Query class, to recognise fragments nested in a statement. */
  readonly Query: new (...args: never[]) => PgQuery
  /** postgres.js's Identifier (`sql('name')`) and Builder (`sql(row)`, `sql(['a', 'b'])`): they put names into the text. */
  readonly #Identifier: new (...args: never[]) => { value: string }
  readonly #Builder: new (...args: never[]) => { build(before: string, parameters: unknown[], types: unknown[], options: unknown): unknown }
  readonly #pick: Picker
  readonly #monitor: Monitor
  /** What the leader's catalog says about functions and views; its version invalidates the two caches below. */
  readonly #catalog: FunctionCatalog
  #catalogVersion = 0
  #kindByStrings = new WeakMap<object, Classification>()
  readonly #kindByText = new Map<string, Classification>()
  /** Statements a replica refused as read-only (25006): they go to the leader from now on. */
  readonly #leaderOnlyTexts = new Set<string>()
  #discovery: Promise<ClusterNode | null> | null = null
  #ended = false
  /** Reused by #pickReplica: picking allocates nothing per statement. */
  readonly #candidates: ClusterNode[] = []
  /** Statements handed to a pool and not yet answered, watched by one sweeper instead of timers each. */
  readonly #pending: PendingStatements
  readonly #sweeper: ReturnType<typeof setInterval>

  constructor(options: NormalizedOptions) {
    super()
    this.options = options
    this.poolOptions = new PoolOptions(options.postgres, options.connectTimeout)
    this.nodes = [
      new ClusterNode(options.leader, 1, options, this.poolOptions),
      ...options.replicas.map((url, i) => new ClusterNode(url, options.weights[i], options, this.poolOptions)),
    ]
    this.leader = this.nodes[0]
    this.Query = Object.getPrototypeOf(this.leader.pool``).constructor
    this.#Identifier = Object.getPrototypeOf(this.leader.pool('name')).constructor
    this.#Builder = Object.getPrototypeOf(this.leader.pool({})).constructor
    this.#catalog = new FunctionCatalog({
      // The leader's pool, not its monitor connection: a slow catalog read must not delay a health check.
      connection: () => (this.leaderUsable ? this.leader.pool : null),
      readOnlyFunctions: options.readOnlyFunctions,
      monitorInterval: options.monitorInterval,
      connectTimeout: options.connectTimeout,
    })
    this.#catalog.start()
    this.#pick = createPicker(options.balance)
    this.#monitor = new Monitor(this)
    this.#monitor.start()
    const bounds = [options.connectTimeout, options.readTimeout].filter((ms) => ms > 0)
    // 20 sweeps per (shortest) timeout: a statement's wait is known to within a sweep, so timeouts fire at most ~10 % late.
    const sweepEvery = Math.max(5, Math.min(...bounds) / 20)
    this.#pending = new PendingStatements(Math.ceil(Math.max(...bounds) / sweepEvery) + 2)
    this.#sweeper = setInterval(() => this.#sweep(), sweepEvery)
    unrefTimer(this.#sweeper)
  }

  /** The pool new statements are created with (any pool would do; they are routed on execution). */
  get factory() {
    return this.nodes[0].pool
  }

  // -------------------------------------------------------------------------
  // Routing

  /** postgres.js calls this when a statement created by our tag is executed. */
  route(query: PgQuery, ctx: RouteContext): void {
    // Statements pinned to the leader are classified too (a cached lookup), so DDL sent there refreshes the catalog.
    let kind: StatementKind = ctx.intent === 'replica' ? 'read' : this.kindOf(query)
    if (ctx.intent === 'leader') kind = 'write'
    this.#run(new Job(query, ctx, kind), query)
  }

  /**
   * Sends one attempt on its way. Plain statements are routed synchronously
   * (no promise per statement on the hot path); only a session read, which
   * may wait for a replica to catch up, goes through async code.
   */
  #run(job: Job, attempt: PgQuery): void {
    try {
      if (job.kind === 'write') this.#dispatch(job, attempt, this.requireLeader())
      else if (this.#monitor.starting) this.#monitor.starting.then(() => this.#run(job, attempt))
      else if (job.ctx.session) this.#runSessionRead(job, attempt).catch((error) => job.reject(error))
      else this.#dispatch(job, attempt, this.#readNode(job, this.#pickReplica(null, job.tried)))
    } catch (error) {
      job.reject(error)
    }
  }

  /**
   * read or write, cached per call site (template strings) or per text, and
   * forgotten when the catalog changes. A statement that may change
   * functions or views has the catalog read again once it has run.
   */
  kindOf(query: PgQuery): StatementKind {
    if (this.#catalog.version !== this.#catalogVersion) {
      this.#kindByStrings = new WeakMap()
      this.#kindByText.clear()
      this.#catalogVersion = this.#catalog.version
    }
    const classification = this.#classification(query)
    if (classification.changesCatalog) this.#catalog.changing(query)
    return classification.kind
  }

  #classification(query: PgQuery): Classification {
    if (!query.tagged || this.#hasFragment(query.args)) return this.#classifyText(this.statementText(query))
    let site = this.#kindByStrings.get(query.strings)
    if (site === undefined) {
      site = this.#classifyText(this.statementText(query, false))
      this.#kindByStrings.set(query.strings, site)
    }
    // Identifiers and builders put names into the text (`select ${sql('f')}(1)`): a read site is read again with them.
    // A write site stays a write: a name cannot take away what made it one.
    if (site.kind === 'write' || !this.#hasNames(query.args)) return site
    return this.#classifyText(this.statementText(query))
  }

  #classifyText(text: string): Classification {
    // Texts known to be leader-only are in #kindByText as writes too; the set only matters after the cache was cleared.
    let classification = this.#kindByText.get(text)
    if (classification === undefined) {
      classification = this.#leaderOnlyTexts.has(text) ? LEADER_ONLY : classifyStatement(text, this.#catalog)
      if (classification.unknownFunction !== undefined) this.#catalog.unknownFunctionSeen()
      if (this.#kindByText.size >= MAX_CACHED_TEXTS) this.#kindByText.clear()
      this.#kindByText.set(text, classification)
    }
    return classification
  }

  /**
   * The statement with fragments inlined, identifiers and builders rendered
   * as postgres.js renders them (`names: false`: as placeholders), and every
   * value as a placeholder: all the classifier needs.
   */
  statementText(query: PgQuery, names = true): string {
    if (!query.tagged) return query.strings[0]
    let text = query.strings[0]
    for (let i = 0; i < query.args.length; i++) text += this.#argumentText(query.args[i], text, names) + query.strings[i + 1]
    return text
  }

  #argumentText(arg: unknown, before: string, names: boolean): string {
    if (arg instanceof this.Query) return this.statementText(arg, names)
    if (Array.isArray(arg) && arg[0] instanceof this.Query) return arg.map((item) => this.#argumentText(item, before, names)).join(' ')
    if (!names) return '$1'
    if (arg instanceof this.#Identifier) return arg.value
    if (arg instanceof this.#Builder) {
      try {
        return String(arg.build(before, [], [], this.factory.options))
      } catch {
        return '$1' // postgres.js refuses it too when the statement runs
      }
    }
    return '$1'
  }

  #hasNames(args: unknown[]): boolean {
    for (const arg of args) if (arg instanceof this.#Identifier || arg instanceof this.#Builder) return true
    return false
  }

  #hasFragment(args: unknown[]): boolean {
    for (const arg of args) if (this.#isFragment(arg)) return true
    return false
  }

  #isFragment(arg: unknown): boolean {
    return arg instanceof this.Query || (Array.isArray(arg) && arg[0] instanceof this.Query)
  }

  /** Whatever call site or helper sends this text again, it goes to the leader. */
  #rememberLeaderOnly(query: PgQuery): void {
    const text = this.statementText(query)
    this.#leaderOnlyTexts.add(text)
    this.#kindByText.set(text, LEADER_ONLY)
    if (query.tagged && !this.#hasNames(query.args)) this.#kindByStrings.set(query.strings, LEADER_ONLY)
  }

  async #runSessionRead(job: Job, attempt: PgQuery): Promise<void> {
    const position = await job.ctx.session!.settled()
    let node = this.#pickReplica(position, job.tried)
    if (!node && position !== null && this.#hasCandidate(job.tried)) node = await this.#waitForReplica(position, job.tried)
    this.#dispatch(job, attempt, this.#readNode(job, node))
  }

  /** The picked replica, else the leader when that is allowed, else an error that says why. */
  #readNode(job: Job, picked: ClusterNode | null): ClusterNode {
    if (picked) return picked
    const refused = this.nodes.filter((candidate) => candidate.loginRefused)
    if (refused.length > 0 && refused.length === this.nodes.filter((candidate) => candidate.failures > 0).length && !this.leaderUsable) {
      throw this.#loginRefused(refused)
    }
    if (!this.options.fallback && !this.#hasCandidate(NOTHING_TRIED)) {
      throw new NoReplicaError(
        'No healthy replica can serve this read and fallback is off. Check `sql.status()` for why the replicas are out, or connect with `fallback: true` to read from the leader meanwhile.',
      )
    }
    if (!this.leaderUsable || job.tried.includes(this.leader)) {
      throw new LeaderUnavailableError('No node can serve this read: every replica is out and the leader does not answer. Check `sql.status()`.')
    }
    return this.leader
  }

  get leaderUsable(): boolean {
    return this.leader.failures === 0 && this.leader.inRecovery !== true
  }

  #leaderUnavailable(cause?: unknown): LeaderUnavailableError {
    const leader = this.leader
    const why = leader.inRecovery === true
      ? `${leader.safeUrl} is in recovery (a replica) and no other node accepts writes`
      : `the leader ${leader.safeUrl} does not answer${leader.lastError ? ` (${leader.lastError})` : ''}`
    return new LeaderUnavailableError(
      `No leader accepts writes: ${why}. Reads still go to replicas. Promote a replica (npx zx scripts/failover.mjs) or bring the leader back; writes resume by themselves once a leader answers.`,
      { cause },
    )
  }

  /** Healthy replicas not yet tried for this statement. */
  readCandidates(tried: readonly ClusterNode[]): ClusterNode[] {
    return this.nodes.filter((node) => this.#isCandidate(node, tried))
  }

  #isCandidate(node: ClusterNode, tried: readonly ClusterNode[]): boolean {
    return node !== this.leader && node.inRecovery !== false && node.available && !tried.includes(node)
  }

  #hasCandidate(tried: readonly ClusterNode[]): boolean {
    return this.nodes.some((node) => this.#isCandidate(node, tried))
  }

  #pickReplica(position: bigint | null, tried: readonly ClusterNode[]): ClusterNode | null {
    // Count first: with one eligible replica (or none) there is nothing to balance and no list to build.
    let eligible = 0
    let last: ClusterNode | null = null
    for (const node of this.nodes) {
      if (this.#mayRead(node, position, tried)) {
        eligible++
        last = node
      }
    }
    if (eligible <= 1) return last
    const candidates = this.#candidates
    let i = 0
    for (const node of this.nodes) if (this.#mayRead(node, position, tried)) candidates[i++] = node
    // Setting an array's length is a runtime call: only when the count changed.
    if (candidates.length !== i) candidates.length = i
    return this.#pick(candidates)
  }

  #mayRead(node: ClusterNode, position: bigint | null, tried: readonly ClusterNode[]): boolean {
    return this.#isCandidate(node, tried) && (position === null || (node.replayLsn !== null && node.replayLsn >= position))
  }

  /** A causal read waits up to sessionWait for a replica to replay its position. */
  async #waitForReplica(position: bigint, tried: readonly ClusterNode[]): Promise<ClusterNode | null> {
    const deadline = Date.now() + this.options.sessionWait
    // Replay usually catches up within a millisecond or two: ask again soon, then every 5 ms.
    for (let pause = 1;; pause = Math.min(5, pause * 2)) {
      const candidates = this.readCandidates(tried)
      if (candidates.length === 0) return null
      await Promise.all(candidates.map((node) => this.#refreshReplay(node, Math.max(1, deadline - Date.now()))))
      const picked = this.#pickReplica(position, tried)
      if (picked) return picked
      const left = deadline - Date.now()
      if (left <= 0) return null
      await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)))
    }
  }

  /** Asks a replica for its replay position; concurrent askers share one query. */
  #refreshReplay(node: ClusterNode, timeoutMs: number): Promise<void> {
    node.refreshing ??= withTimeout(node.monitor.unsafe(REPLICA_POSITION), Math.max(timeoutMs, 50), node.name)
      .then(([row]) => void (node.replayLsn = maxLsn(node.replayLsn, parseLsn(row.lsn))))
      .catch(() => {})
      .finally(() => (node.refreshing = null))
    return node.refreshing
  }

  // -------------------------------------------------------------------------
  // Execution

  /**
   * Hands the statement to the node's own postgres.js pool. Its settle
   * functions are wrapped so we see the outcome first: count it, raise a
   * session's position, or retry elsewhere before the caller sees an error.
   */
  #dispatch(job: Job, attempt: PgQuery, node: ClusterNode): void {
    // Cancelled while it waited here (a session read waiting for a replica): the caller already has 57014.
    if (attempt.cancelled) return
    attempt.canceller = node.canceller
    if (streams(attempt)) {
      // Streams (cursors, forEach, COPY) deliver rows as they come: a retry could repeat them, so they
      // run once, as they are. Nothing may be pipelined behind a COPY: a session learns its position
      // once the stream has ended.
      node.served++
      const session = job.ctx.session
      if (session) afterStream(attempt, () => session.track(this.positionAfter(node)))
      node.handler(attempt)
      return
    }
    node.inFlight++
    let done = false
    const position = job.ctx.session ? this.#pipelinePosition(attempt, node) : null
    const slot = this.#pending.add(attempt, node, job.kind === 'read' && node !== this.leader)
    attempt.resolve = (result) => {
      if (done) return
      done = true
      node.inFlight--
      this.#pending.remove(slot)
      node.served++
      node.answers++
      if (position && job.ctx.session) job.ctx.session.track(position()).then(() => job.resolve(result))
      else job.resolve(result)
    }
    attempt.reject = (error) => {
      if (done) return
      done = true
      node.inFlight--
      this.#pending.remove(slot)
      node.errors++
      if (!nodeUnreachable(error)) node.answers++
      job.tried = [...job.tried, node]
      this.#onError(job, node, error).catch((failure) => job.reject(failure))
    }
    node.handler(attempt)
  }

  /**
   * Gives up on statements that waited too long, checked 20 times per
   * (shortest) timeout by one interval rather than two timers per statement.
   *
   * Not yet sent after connectTimeout, on a node that has answered nothing
   * for connectTimeout: postgres.js's connect_timeout bounds each connection
   * attempt, not each caller, so statements queued behind a host that
   * accepts but never answers would wait attempt after attempt. Such a
   * statement is taken back (cancelled before it was sent, so it never runs)
   * and fails as a connect timeout, which the router retries elsewhere. A
   * node that answered anything that recently (a statement, the monitor) is
   * busy, not stalled, and its queue is left alone. Answers are stamped when
   * the sweeper first sees them, never earlier than they came, so a node is
   * never taken for silent longer than it was.
   *
   * A replica read unanswered after readTimeout, sent or not, is abandoned
   * and retried elsewhere (an unsent one is cancelled); a late answer is ignored.
   */
  #sweep(): void {
    const now = Date.now()
    const { connectTimeout, readTimeout } = this.options
    for (const node of this.nodes) {
      if (node.answers !== node.answersSeen) {
        node.answersSeen = node.answers
        node.lastAnsweredAt = Math.max(node.lastAnsweredAt, now)
      }
    }
    this.#pending.sweep(now, (attempt, node, waited, replicaRead) => {
      if (replicaRead && readTimeout > 0 && waited >= readTimeout) {
        attempt.reject(timeoutError(`${node.name} did not answer a read within ${readTimeout} ms`, 'PGFOLLOW_READ_TIMEOUT'))
        if (!attempt.state) attempt.cancel()
      } else if (!attempt.state && waited >= connectTimeout && now - node.lastAnsweredAt >= connectTimeout) {
        attempt.reject(timeoutError(`${node.name} did not accept a connection within ${connectTimeout} ms`, 'CONNECT_TIMEOUT'))
        attempt.cancel()
      }
    })
  }

  /**
   * Queues "where are you now?" right behind the statement on the same
   * connection (postgres.js pipelines it), so a session learns its new
   * position without another blocking round trip. When the statement was
   * not pipelined (a first, unprepared execution), it asks afterwards.
   */
  #pipelinePosition(attempt: PgQuery, node: ClusterNode): () => Promise<bigint | null> {
    const text = node === this.leader ? LEADER_POSITION : REPLICA_POSITION
    const follow = node.pool.unsafe(text) as unknown as PgQuery
    follow.executed = true // it runs only through the pipeline below, never through the pool
    // When the statement fails, nobody awaits the follow-up: its failure is expected, not unhandled.
    follow.catch(() => {})
    let pipelined = false
    const previous = attempt.options.onexecute
    attempt.options.onexecute = (connection) => {
      pipelined = true
      previous?.(connection)
      return connection.execute(follow)
    }
    return () => pipelined ? this.#positionFrom(node, follow) : this.positionAfter(node)
  }

  /**
   * Where a session stands after a statement that has ended on `node`, asked
   * on any of the node's connections (not pipelined): the leader's insert
   * position, or what the replica had replayed.
   */
  positionAfter(node: ClusterNode): Promise<bigint | null> {
    return this.#positionFrom(node, node.pool.unsafe(node === this.leader ? LEADER_POSITION : REPLICA_POSITION) as unknown as PgQuery)
  }

  async #positionFrom(node: ClusterNode, query: PgQuery): Promise<bigint | null> {
    try {
      const rows = (await query) as { lsn: string }[]
      const lsn = parseLsn(rows[0].lsn)
      if (node !== this.leader) node.replayLsn = maxLsn(node.replayLsn, lsn)
      return lsn
    } catch {
      // The node died right after answering: the leader's position bounds what it could have shown.
      return this.#leaderPosition().catch(() => UNREACHABLE_POSITION)
    }
  }

  /**
   * The node a read in this context goes to now, chosen as for a statement
   * (a session waits for a replica that has its position): where a reserved
   * connection whose first statement is a read binds.
   */
  async readNode(ctx: RouteContext): Promise<ClusterNode> {
    const position = ctx.session ? await ctx.session.settled() : null
    let node = this.#pickReplica(position, NOTHING_TRIED)
    if (!node && position !== null && this.#hasCandidate(NOTHING_TRIED)) node = await this.#waitForReplica(position, NOTHING_TRIED)
    return this.#readNode({ tried: NOTHING_TRIED } as Job, node)
  }

  async #leaderPosition(): Promise<bigint | null> {
    const [row] = await this.leader.pool.unsafe(LEADER_POSITION)
    return parseLsn(row.lsn)
  }

  /** A copy of a statement that can be executed again elsewhere. */
  #fresh(query: PgQuery): PgQuery {
    const pool = this.factory as unknown as (...args: unknown[]) => PgQuery
    const copy = query.tagged
      ? pool(query.strings, ...query.args)
      : (this.factory.unsafe(query.strings[0], query.args as never[], { ...query.options, onexecute: undefined } as never) as unknown as PgQuery)
    copy.isRaw = query.isRaw
    copy.options.simple = query.options.simple
    copy.options.prepare = query.options.prepare
    copy.executed = true
    return copy
  }

  async #onError(job: Job, node: ClusterNode, error: unknown): Promise<void> {
    // Ended (or destroyed by end({ timeout })): the user's own doing, reported as postgres.js reports it.
    if (this.#ended) throw error
    const isLeader = node === this.leader
    if (nodeUnreachable(error) || authenticationFailure(error) || (error as { code?: string }).code === 'PGFOLLOW_READ_TIMEOUT') {
      this.nodeFailed(node, error)
    }
    if (readOnlyRefusal(error)) {
      if (!isLeader) {
        // The classifier thought it a read; the replica knows better. Remember, and run it where it can.
        this.#rememberLeaderOnly(job.query)
        job.kind = 'write'
        return this.#run(job, this.#fresh(job.query))
      }
      // The leader itself is read-only now: it was demoted. Nothing ran, so find the new one and retry once.
      node.inRecovery = true
      if (!job.leaderRetried) {
        job.leaderRetried = true
        await this.discoverLeader()
        return this.#run(job, this.#fresh(job.query))
      }
      throw this.#leaderUnavailable(error)
    }
    if (job.kind === 'read' && (retryableRead(error) || authenticationFailure(error))) {
      return this.#run(job, this.#fresh(job.query))
    }
    if (authenticationFailure(error)) throw this.#loginRefused([node], error)
    if (job.kind === 'write' && isLeader && neverConnected(error) && !job.leaderRetried) {
      // The statement never left us: safe to send to a newly found leader.
      job.leaderRetried = true
      const leader = await this.discoverLeader()
      if (leader && leader !== node && this.leaderUsable) return this.#run(job, this.#fresh(job.query))
      throw this.#leaderUnavailable(error)
    }
    if (job.kind === 'write' && isLeader && connectionLost(error)) {
      throw new LeaderUnavailableError(
        `The connection to the leader ${node.safeUrl} broke while the statement ran, so it may or may not have been applied: check before repeating it. Writes resume once a leader answers.`,
        { cause: error },
      )
    }
    throw error
  }

  // -------------------------------------------------------------------------
  // Health and leadership (called by the monitor, too)

  nodeFailed(node: ClusterNode, error: unknown): void {
    const wasAvailable = node.failures === 0
    node.fail(error, this.options.ban)
    if (!wasAvailable) return
    if (node === this.leader) void this.discoverLeader()
    else if (!node.retired) this.emit('retire', { name: node.name, url: node.safeUrl, reason: 'unreachable', error: node.lastError })
  }

  nodeAnswered(node: ClusterNode): void {
    const wasFailing = node.failures > 0
    node.succeed()
    if (wasFailing && node !== this.leader && !node.retired) this.emit('restore', { name: node.name, url: node.safeUrl, reason: 'reachable' })
  }

  /**
   * Moves writes to the writable node. Several writable nodes mean a split
   * brain: keep the current leader if it is one of them, and warn.
   */
  electLeader(writable: ClusterNode[]): void {
    if (writable.length === 0 || writable.includes(this.leader)) {
      if (writable.length > 1) {
        this.#warn(
          `More than one node accepts writes (${
            writable.map((node) => node.name).join(', ')
          }): writes stay on ${this.leader.name}. Fence the others.`,
        )
      }
      return
    }
    const previous = this.leader
    this.leader = writable[0]
    if (writable.length > 1) {
      this.#warn(
        `More than one node accepts writes (${writable.map((node) => node.name).join(', ')}): writes go to ${this.leader.name}. Fence the others.`,
      )
    }
    this.emit('leader', { name: this.leader.name, url: this.leader.safeUrl, previous: previous.name })
  }

  // --- Nodes added at run time (Patroni lists a member the descriptor does not) ---

  /**
   * Adds a node at run time, as a replica: it serves reads once the monitor
   * has seen it in recovery and not lagging, like any other. Returns the
   * existing node when one already has this URL.
   */
  addNode(url: string, name?: string): ClusterNode {
    const known = this.nodes.find((node) => node.url === url)
    if (known) return known
    // Patroni's member name identifies it; without one (or when taken) it is named like any node (node.ts).
    const taken = new Set(this.nodes.map((node) => node.name))
    const node = new ClusterNode(url, 1, this.options, this.poolOptions, name && !taken.has(name) ? name : undefined)
    this.nodes.push(node)
    this.emit('add', { name: node.name, url: node.safeUrl })
    return node
  }

  // --- end of nodes added at run time ---

  /** Asks every node whether it is in recovery; the one that is not takes the writes. */
  discoverLeader(): Promise<ClusterNode | null> {
    if (this.#ended) return Promise.resolve(null)
    this.#discovery ??= (async () => {
      const timeout = this.options.connectTimeout
      await Promise.all([
        // With Patroni, its view names the new leader as soon as it has one.
        this.#monitor.patroni?.follow(),
        ...this.nodes.map(async (node) => {
          try {
            const [row] = await withTimeout(node.monitor`select pg_is_in_recovery() as in_recovery`, timeout, node.name)
            node.inRecovery = row.in_recovery
            this.nodeAnswered(node)
          } catch (error) {
            if (node.failures === 0) this.nodeFailed(node, error)
          }
        }),
      ])
      this.electLeader(this.nodes.filter((node) => node.failures === 0 && node.inRecovery === false))
      return this.leaderUsable ? this.leader : null
    })().finally(() => (this.#discovery = null))
    return this.#discovery
  }

  #warned = new Set<string>()
  #warn(message: string): void {
    if (this.#warned.has(message)) return
    this.#warned.add(message)
    if (this.listenerCount('warning') > 0) this.emit('warning', { message })
    else console.warn(`pgfollow: ${message}`)
  }

  /** Checks that the descriptor's roles match the servers, once the first answers are in. */
  async checkRoles(): Promise<void> {
    await this.#monitor.tick()
    for (const node of this.nodes) {
      if (node !== this.leader && node.inRecovery === false) {
        this.#warn(`${node.name} (${node.safeUrl}) is listed as a replica but is not in recovery: it is a leader. Fix the descriptor.`)
      }
    }
  }

  /** Runs one monitor round now (tests and scripts use it instead of waiting an interval). */
  refresh(): Promise<void> {
    return Promise.all([this.#monitor.tick(), this.#catalog.check()]).then(() => {})
  }

  status(): NodeStatus[] {
    return this.nodes.map((node) => ({
      name: node.name,
      url: node.safeUrl,
      role: node === this.leader ? 'leader' : 'replica',
      state: node.state,
      lagBytes: node === this.leader ? 0 : node.lagBytes,
      lagMs: node === this.leader ? 0 : node.lagMs,
      inFlight: node.inFlight,
      served: node.served,
      errors: node.errors,
      lastError: node.lastError,
    }))
  }

  /** A leader that answers, or an error that says what to do (a refused login is a configuration problem). */
  requireLeader(): ClusterNode {
    if (this.leaderUsable) return this.leader
    if (this.leader.loginRefused) throw this.#loginRefused([this.leader])
    void this.discoverLeader()
    throw this.#leaderUnavailable(this.leader.lastFailure ?? undefined)
  }

  #loginRefused(nodes: ClusterNode[], cause: unknown = nodes[0]?.lastFailure): ConfigError {
    const names = nodes.map((node) => `${node.name} (${node.safeUrl})`).join(', ')
    return new ConfigError(`${names} refused the login: fix the user or password in the descriptor (or connect() options).`, { cause })
  }

  /**
   * Runs a transaction on the leader's pool, counted like any statement. A
   * leader that cannot be reached becomes a LeaderUnavailableError, and the
   * search for a new leader starts.
   */
  async transaction<T>(run: (leader: ClusterNode['pool']) => Promise<T>): Promise<T> {
    const leader = this.requireLeader()
    leader.inFlight++
    try {
      const result = await run(leader.pool)
      this.#catalog.mayHaveChanged() // the transaction may have run DDL the router never saw
      leader.served++
      return result
    } catch (error) {
      leader.errors++
      if (this.#ended || !nodeUnreachable(error)) throw error
      this.nodeFailed(leader, error)
      throw new LeaderUnavailableError(
        `The leader ${leader.safeUrl} went away during the transaction${
          neverConnected(error) ? ' before it began' : ', so it may or may not have committed'
        }: check before repeating it. Writes resume once a leader answers.`,
        { cause: error },
      )
    } finally {
      leader.inFlight--
    }
  }

  /** The leader's WAL insert position now: where a session stands after a transaction. */
  leaderPosition(): Promise<bigint | null> {
    return this.#leaderPosition()
  }

  async end(options: { timeout?: number } = {}): Promise<void> {
    this.#ended = true
    this.#monitor.stop()
    this.#catalog.stop()
    clearInterval(this.#sweeper)
    // postgres.js's end() can hang on a connection that is failing to log in
    // right then: let in-flight checks (each bounded by a timeout) finish first.
    await Promise.allSettled([this.#discovery, this.#monitor.tick(), this.#catalog.settled()])
    // As postgres.js: without a timeout, wait for what runs. A failing node runs nothing of the
    // user's, and postgres.js's end() would wait forever for a connection retrying a dead host.
    await Promise.all(this.nodes.map((node) => node.end(options.timeout ?? (node.failures > 0 ? 0 : undefined))))
  }
}
