/**
 * The router decides where each statement runs and owns the queue: it
 * hands a node only what one of its lanes (connections reserved for routed
 * statements) can run now, and the next free node takes the next
 * statement. Failures on the way are made invisible where that is safe, as
 * the retry policy decides. Leadership and the monitor live beside it.
 */
import { EventEmitter } from 'node:events'
import { createPicker } from './balance.ts'
import { FunctionCatalog } from './catalog.ts'
import type { StatementKind } from './classify.ts'
import { LeaderUnavailableError, NoReplicaError } from './errors.ts'
import { neverConnected, nodeUnreachable, READ_TIMEOUT } from './failures.ts'
import { Monitor, nextTurn, settledWithin, unrefTimer } from './health.ts'
import { Job, type RouteContext } from './job.ts'
import { type Lane, NodeLanes } from './lanes.ts'
import { Leadership } from './leadership.ts'
import { maxLsn, parseLsn } from './lsn.ts'
import { ClusterNode, type NodeState } from './node.ts'
import type { NormalizedOptions } from './options.ts'
import { PendingStatements } from './pending.ts'
import { PoolOptions } from './pool-options.ts'
import { LEADER_POSITION, REPLICA_POSITION } from './queries.ts'
import { afterStream } from './streams.ts'
import { checkPostgresInternals, type PgQuery } from './postgres-internals.ts'
import { type Action, decide, failureError } from './retry-policy.ts'
import { ReplicaChoice } from './replica-choice.ts'
import { StatementKinds } from './statement-kinds.ts'
import { Waiting } from './waiting.ts'

export type { RouteContext } from './job.ts'

/** A position no replica reaches: the session reads from the leader until it learns a real one. */
const UNREACHABLE_POSITION = (1n << 64n) - 1n
const NOTHING_TRIED: readonly ClusterNode[] = []
/** The window over which a replica's read lanes are measured and adapted, ms. */
const LANE_WINDOW_MS = 500

/** What `sql.status()` reports per node. */
export interface NodeStatus {
  name: string
  url: string
  role: 'leader' | 'replica'
  state: NodeState
  lagBytes: number
  lagMs: number
  inFlight: number
  /** Connections the router runs statements on: reads use `readLanes` of them (adapted to what the node serves best). */
  lanes: number
  readLanes: number
  /** Statements answered, outside transactions. */
  served: number
  /** Transactions committed. */
  transactions: number
  errors: number
  lastError: string | null
}

/** An ErrorResponse from the server (postgres.js's PostgresError carries its severity), not a broken connection. */
function isServerError(error: unknown): boolean {
  return typeof (error as { severity?: unknown })?.severity === 'string' && !nodeUnreachable(error)
}

/** What a statement gets that was still waiting in the router when `sql.end()` came. */
function endedError(): Error {
  return codedError('The sql tag was ended (sql.end()) before this statement could run.', 'CONNECTION_ENDED')
}

function codedError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code })
}

export class Router extends EventEmitter {
  readonly options: NormalizedOptions
  readonly nodes: ClusterNode[]
  /** The postgres.js options every node's pool shares; `sql.options` is its view. */
  readonly poolOptions: PoolOptions
  /** postgres.js's Query class, to recognise fragments nested in a statement. */
  readonly Query: new (...args: never[]) => PgQuery
  readonly #leadership: Leadership
  readonly #monitor: Monitor
  /** What the leader's catalog says about functions, views, operators and casts. */
  readonly #catalog: FunctionCatalog
  /** Each statement's kind, cached per call site and per text. */
  readonly #kinds: StatementKinds
  /** Reads waiting for a replica lane, and statements waiting for the leader's. */
  readonly #reads = new Waiting<Job>()
  readonly #forLeader = new Waiting<Job>()
  readonly #replicas: ReplicaChoice
  /** Statements on the wire, watched by one sweeper instead of a timer each. */
  readonly #pending: PendingStatements<Job>
  readonly #sweeper: ReturnType<typeof setInterval>
  /** Each replica's read lanes are adapted once per window (lane-limit.ts). */
  readonly #laneWindow: ReturnType<typeof setInterval>

  constructor(options: NormalizedOptions) {
    super()
    this.options = options
    this.poolOptions = new PoolOptions(options.postgres, options.connectTimeout)
    this.nodes = [
      new ClusterNode(options.leader, 1, options, this.poolOptions),
      ...options.replicas.map((url, i) => new ClusterNode(url, options.weights[i], options, this.poolOptions)),
    ]
    this.Query = checkPostgresInternals(this.nodes[0].pool)
    for (const node of this.nodes) this.#addLanes(node)
    this.#leadership = new Leadership(this, () => this.#monitor.patroni?.hunt())
    // Reads stranded without a node go on as soon as one is back.
    for (const event of ['leader', 'restore']) this.on(event, () => this.#strandedSince > 0 && this.#rerouteReads(false))
    this.#catalog = new FunctionCatalog({
      // A client of its own, not the monitor's (a slow catalog read must not delay a health check) and not the
      // pool's (shared per process and unref'd: 200 tags hold one, and an unused tag lets the process exit).
      connection: () => (this.leaderUsable ? this.leader.catalogClient : null),
      readOnlyFunctions: options.readOnlyFunctions,
      monitorInterval: options.monitorInterval,
      connectTimeout: options.connectTimeout,
    })
    this.#catalog.start()
    this.#kinds = new StatementKinds(this.#catalog, this.nodes[0].pool, this.Query)
    this.#replicas = new ReplicaChoice(this.nodes, () => this.leader, options, createPicker(options.balance))
    this.#monitor = new Monitor(this)
    this.#monitor.start()
    this.on('retire', () => this.#rerouteReads(false))
    // A replica back in the reads takes what waits for it.
    this.on('restore', ({ name }: { name: string }) => {
      const node = this.nodes.find((candidate) => candidate.name === name)
      if (node) this.#pump(node)
      if (this.#reads.length > 0) this.#rerouteReads(false)
    })
    // 20 sweeps per readTimeout: a read's time on the wire is known to within a sweep.
    const sweepEvery = Math.max(5, (options.readTimeout || 1_000) / 20)
    this.#pending = new PendingStatements(Math.ceil((options.readTimeout || 1_000) / sweepEvery) + 2)
    this.#sweeper = setInterval(() => this.#sweep(), sweepEvery)
    unrefTimer(this.#sweeper)
    this.#laneWindow = setInterval(() => this.#adaptLanes(), LANE_WINDOW_MS)
    unrefTimer(this.#laneWindow)
  }

  #addLanes(node: ClusterNode): void {
    node.lanes = new NodeLanes(node.lanePool, this.options.inFlight, this.options.pipeline, 2 * this.options.connectTimeout, {
      free: () => this.#pump(node),
      failed: (error) => this.#laneFailed(node, error),
    })
  }

  get leader(): ClusterNode {
    return this.#leadership.leader
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
    if (query.streaming) return this.#copy(query, kind, ctx)
    const job = new Job(query, ctx, kind)
    job.onSettle = (attempt, ok, value) => this.#settled(job, attempt, ok, value)
    this.#run(job)
  }

  /** Sends a job on its way: synchronously, except a session read, which may wait for a replica. */
  #run(job: Job): void {
    if (this.#ended) return job.reject(endedError())
    try {
      if (job.kind === 'write') this.#toLeader(job, this.requireLeader())
      else if (this.#monitor.starting) this.#monitor.starting.then(() => this.#run(job))
      else if (job.ctx.session) this.#runSessionRead(job).catch((error) => job.reject(error))
      else this.#toReplica(job)
    } catch (error) {
      // No node can take it: fail on a later turn, so that a caller retrying in a loop lets timers run.
      void nextTurn().then(() => job.reject(error))
    }
  }

  /** read or write (statement-kinds.ts); a statement that may change functions or views has the catalog read again once it has run. */
  kindOf(query: PgQuery): StatementKind {
    return this.#kinds.kindOf(query)
  }

  /** The text the classifier sees: fragments inlined, names rendered, values as placeholders. */
  statementText(query: PgQuery): string {
    return this.#kinds.statementText(query)
  }

  async #runSessionRead(job: Job): Promise<void> {
    const position = await job.ctx.session!.settled()
    job.position = position
    if (!this.#replicas.hasEligible(position, job.tried) && position !== null && this.#replicas.hasCandidate(job.tried)) {
      await this.#replicas.waitForReplay(position, job.tried)
    }
    this.#toReplica(job)
  }

  /**
   * The balancing policy picks among eligible replicas with room (an idle
   * lane, or fewer lanes than the limit). An idle lane runs the read now;
   * otherwise the read waits in line and the picked node opens a lane, and
   * whichever lane frees first takes the read. All full: it waits in line.
   */
  #toReplica(job: Job, mayStrand = true): void {
    const node = this.#replicas.pickWithRoom(job.position, job.tried)
    if (node) {
      const lane = node.lanes.take(false)
      if (lane) return this.#send(job, node, lane)
      if (node.lanes.canOpenNow(false)) node.lanes.open()
      node.lanes.waited++
      return this.#reads.push(job)
    }
    if (this.#replicas.hasEligible(job.position, job.tried)) {
      // Every replica's lanes are full: demand beyond what they take now.
      for (const replica of this.nodes) replica.lanes.waited++
      return this.#reads.push(job)
    }
    let leader: ClusterNode
    try {
      leader = this.#readFallback(job)
    } catch (error) {
      // No node right now, but the leader may only be changing hands (a failover, a switchover): wait for one.
      if (mayStrand && error instanceof LeaderUnavailableError && this.options.fallback) return this.#strand(job)
      throw error
    }
    this.#toLeader(job, leader)
  }

  /**
   * A read with no node to go to right now (between the old leader's
   * demotion or death and the new one's election): it waits in line like a
   * read stranded by a retire, goes on as soon as a replica is back or a
   * leader is elected, and fails only after connectTimeout with no node.
   */
  #strand(job: Job): void {
    this.#reads.push(job)
    if (this.#strandedSince === 0) this.#strandedSince = Date.now()
    if (!this.#strandTimer) this.#strandDeadline()
  }

  /**
   * One timer for the stranded reads: connectTimeout after they first had
   * no node, those still without one fail. Not unref'd, unlike the sweeper:
   * a caller waits on them, and it keeps the process alive until then.
   */
  #strandDeadline(): void {
    if (this.#strandTimer) clearTimeout(this.#strandTimer)
    this.#strandTimer = null
    if (this.#strandedSince === 0) return
    this.#strandTimer = setTimeout(() => {
      this.#strandTimer = null
      if (this.#strandedSince > 0) this.#rerouteReads(true)
    }, Math.max(0, this.#strandedSince + this.options.connectTimeout - Date.now()))
  }

  #strandTimer: ReturnType<typeof setTimeout> | null = null

  #toLeader(job: Job, leader: ClusterNode): void {
    const lane = leader.lanes.take(true)
    if (lane) return this.#send(job, leader, lane)
    this.#forLeader.push(job)
    if (leader.lanes.canOpenNow(true) && leader.lanes.opening < this.#forLeader.length) leader.lanes.open()
  }

  /** A lane of `node` is free: it takes the next statement it may run. */
  #pump(node: ClusterNode): void {
    const leader = node === this.leader
    // On the leader every statement runs alone on its lane; replicas pipeline reads.
    while (node.lanes.hasRoom(leader)) {
      const job = leader ? this.#forLeader.take(() => true) : this.#reads.take((job) => this.#replicas.mayRead(node, job.position, job.tried))
      if (!job) return
      this.#send(job, node, node.lanes.take(leader)!)
    }
    // Lanes open a few at a time: while statements still wait, the next one opens.
    if (node.lanes.canOpenNow(leader) && (leader ? this.#forLeader.length : this.#reads.length) > node.lanes.opening) node.lanes.open()
  }

  /** The leader for a read no replica may serve, or an error that says why. */
  #readFallback(job: Job): ClusterNode {
    const refused = this.nodes.filter((candidate) => candidate.loginRefused)
    if (refused.length > 0 && refused.length === this.nodes.filter((candidate) => candidate.failures > 0).length && !this.leaderUsable) {
      throw this.#leadership.loginRefused(refused)
    }
    if (!this.options.fallback) {
      const why = job.position !== null && this.#replicas.hasCandidate(job.tried)
        ? `no replica replayed this session's position within sessionWait (${this.options.sessionWait} ms)`
        : 'no healthy replica can serve this read'
      throw new NoReplicaError(
        `${why}, and fallback is off, so the leader is not asked. Check \`sql.status()\` for why the replicas are out, raise sessionWait, or connect with \`fallback: true\` to read from the leader meanwhile.`,
      )
    }
    if (!this.leaderUsable || job.tried.includes(this.leader)) {
      throw new LeaderUnavailableError('No node can serve this read: every replica is out and the leader does not answer. Check `sql.status()`.')
    }
    return this.leader
  }

  /** Healthy replicas not yet tried for a statement. */
  readCandidates(tried: readonly ClusterNode[]): ClusterNode[] {
    return this.#replicas.candidates(tried)
  }

  get leaderUsable(): boolean {
    return this.#leadership.usable
  }

  /**
   * Queued reads after a replica left: those another replica may serve move
   * there (or to the leader, when it may serve them). `settle`: a lane could
   * not even be opened, so a read no node can take fails now; after a retire
   * (a missed check may be a busy machine) it keeps waiting for a lane.
   */
  #rerouteReads(settle: boolean): void {
    const since = this.#strandedSince
    this.#strandedSince = 0
    for (const job of this.#reads.drain()) {
      try {
        this.#toReplica(job, !settle)
      } catch (error) {
        if (settle) job.reject(error)
        else this.#strand(job)
      }
    }
    // Stranded again: connectTimeout still counts from when they first had no node.
    if (this.#strandedSince !== 0 && since !== 0) this.#strandedSince = since
    this.#strandDeadline()
  }

  /** Since when queued reads have had no node to go to (0: they have one): after connectTimeout they fail. */
  #strandedSince = 0

  // -------------------------------------------------------------------------
  // Execution

  /** Puts the attempt on the lane's connection; a session's position query follows it on the same connection. */
  #send(job: Job, node: ClusterNode, lane: Lane): void {
    const attempt = job.attempt
    // Cancelled while it waited here: the caller already has 57014; the lane stays free.
    if (attempt.cancelled) {
      node.lanes.done(lane)
      return
    }
    attempt.canceller = node.canceller
    job.node = node
    job.lane = lane
    node.inFlight++
    this.#sent++
    job.slot = this.#pending.add(job, node, job.kind === 'read' && node !== this.leader)
    lane.handler(attempt)
    if (!job.ctx.session) return
    const follow = lane.sql.unsafe(node === this.leader ? LEADER_POSITION : REPLICA_POSITION) as unknown as PgQuery
    follow.executed = true
    node.lanes.join(lane)
    lane.handler(follow)
    const position = (follow as Promise<unknown>).then(
      (rows) => {
        // Right behind a statement that failed after sending rows: these rows cannot be trusted.
        if (lane.poisonNext) throw ((lane.poisonNext = false), new Error('poisoned'))
        const lsn = parseLsn((rows as { lsn: string }[])[0].lsn)
        if (node !== this.leader) node.replayLsn = maxLsn(node.replayLsn, lsn)
        return lsn
      },
      // The node died right after answering: the leader's position bounds what it could have shown.
      () => ((lane.poisonNext = false), this.leaderPosition().catch(() => UNREACHABLE_POSITION)),
    ).catch(() => this.leaderPosition().catch(() => UNREACHABLE_POSITION)).finally(() => node.lanes.done(lane))
    job.ctx.session.track(position)
  }

  /** The current attempt settled: count it, free its lane, then answer the caller or act on the error. */
  #settled(job: Job, attempt: PgQuery, ok: boolean, value: unknown): void {
    if (attempt === job.abandoned?.attempt) {
      // The late answer of a read given up on: its lane is free again (or gone, if the connection broke).
      const { lane, node } = job.abandoned
      job.abandoned = null
      if (!ok && !isServerError(value)) lane.kill()
      else if (!ok) lane.dirty = lane.running <= 1
      node.lanes.done(lane)
      return
    }
    if (attempt !== job.attempt || !job.node) return
    const node = job.node
    const lane = job.lane!
    job.node = job.lane = null
    node.inFlight--
    this.#pending.remove(job.slot)
    if (lane.poisonNext) {
      // Right behind a statement that failed on this connection, maybe after sending rows: an answer here may hold
      // holes (postgres.js 3.4.9), so a read runs again; a failure is taken as it came.
      lane.poisonNext = false
      if (ok && job.kind === 'read') {
        node.lanes.done(lane)
        return this.#retry(job)
      }
    }
    if (ok) {
      node.served++
      node.answers++
      node.lanes.done(lane)
      if (job.ctx.session) job.ctx.session.settled().then(() => job.resolve(value))
      else job.resolve(value)
      return
    }
    node.errors++
    if (!nodeUnreachable(value)) node.answers++
    // An SQL error leaves the connection usable once cleansed; any other (closed, reset, timed out) ends the lane.
    if (!isServerError(value)) lane.kill()
    else if (lane.running > 1) lane.poisonNext = true
    else lane.dirty = true
    node.lanes.done(lane)
    job.tried = [...job.tried, node]
    this.#onError(job, node, value).catch((failure) => job.reject(failure))
  }

  /**
   * A replica read on the wire for readTimeout, on a node that has answered
   * nothing (not even the monitor) for as long or failed its check, is given
   * up: its connection is closed and the read retried elsewhere. A slow read
   * on a node that answers is left to finish.
   */
  #sweep(): void {
    const now = Date.now()
    const { readTimeout } = this.options
    for (const node of this.nodes) {
      if (node.answers !== node.answersSeen) {
        node.answersSeen = node.answers
        node.lastAnsweredAt = Math.max(node.lastAnsweredAt, now)
      }
    }
    this.#restartWaiting()
    if (readTimeout <= 0) return
    // The monitor asks every monitorInterval: a node is silent once it missed two of its checks too.
    const silentAfter = readTimeout + 2 * this.options.monitorInterval
    this.#pending.sweep(now, (job, node, waited, replicaRead) => {
      if (!replicaRead || waited < readTimeout || (node.failures === 0 && now - node.lastAnsweredAt < silentAfter)) return
      this.#abandon(job, node)
    })
  }

  /**
   * One replica at a time tries another read lane count (on one machine,
   * one replica's trial would weigh on the others' measurements); the turn
   * to start one goes round.
   */
  #adaptLanes(): void {
    const replicas = this.nodes.filter((node) => node !== this.leader)
    let trial = replicas.some((node) => node.lanes.reads.inTrial)
    this.#laneTurn = (this.#laneTurn + 1) % Math.max(1, replicas.length)
    for (let i = 0; i < replicas.length; i++) {
      const lanes = replicas[(i + this.#laneTurn) % replicas.length].lanes
      lanes.adapt(!trial)
      trial ||= lanes.reads.inTrial
    }
  }

  #laneTurn = 0
  /** Statements sent, as of the last sweep too: whether anything moved in between. */
  #sent = 0
  #sentAtSweep = 0

  /**
   * What waits is never left waiting for an event that may not come (a lane
   * that failed to open while others were open leaves none behind): a usable
   * node with no lane opening takes what waits for it, or opens a lane.
   */
  #restartWaiting(): void {
    // Something was sent since the last sweep: things move, and a lane still opening keeps its reads.
    if (this.#sent !== this.#sentAtSweep) return void (this.#sentAtSweep = this.#sent)
    if (this.#forLeader.length > 0 && this.leaderUsable && this.leader.lanes.opening === 0) this.#pump(this.leader)
    if (this.#reads.length === 0) return
    for (const node of this.#replicas.candidates(NOTHING_TRIED)) if (node.lanes.opening === 0) this.#pump(node)
  }

  /**
   * Gives up on a read stuck on a node that stopped answering, and retries
   * it elsewhere. Its connection is left alone (closing it would cost a new
   * one, and postgres.js delays reconnects with a growing back-off): nothing
   * joins that lane, which is free again when the late answer comes.
   */
  #abandon(job: Job, node: ClusterNode): void {
    const lane = job.lane!
    job.abandoned = { attempt: job.attempt, lane, node }
    job.node = job.lane = null
    node.inFlight--
    node.errors++
    this.#pending.remove(job.slot)
    lane.exclusive = true
    job.tried = [...job.tried, node]
    const error = codedError(
      `${node.name} stopped answering: a read got no answer within ${this.options.readTimeout} ms and the node failed its health check`,
      READ_TIMEOUT,
    )
    this.#onError(job, node, error).catch((failure) => job.reject(failure))
  }

  /** Acts on the retry policy's decision. */
  async #onError(job: Job, node: ClusterNode, error: unknown): Promise<void> {
    // Ended (or destroyed by end({ timeout })): the user's own doing, reported as postgres.js reports it.
    if (this.#ended) throw error
    const action: Action = decide(
      { kind: job.kind, intent: job.ctx.intent, onLeader: node === this.leader, delivered: job.delivered(), leaderRetried: job.leaderRetried },
      error,
    )
    if ('ban' in action && action.ban) this.nodeFailed(node, error)
    switch (action.do) {
      case 'retry-read':
        this.#retry(job)
        return
      case 'retry-on-leader':
        // The classifier thought it a read; the replica knows better. Remember, and run it where it can.
        this.#kinds.rememberLeaderOnly(job.query)
        job.kind = 'write'
        this.#retry(job)
        return
      case 'confirm-demotion': {
        // 25006 from the leader: a demotion only if it now says it is in recovery; else the statement's own doing.
        const inRecovery = await this.#leadership.inRecovery(node).catch((failure) => (this.nodeFailed(node, failure), null))
        if (inRecovery === false) throw error
        if (inRecovery) node.inRecovery = true
        return this.#rediscoverThenRetry(job, node, error)
      }
      case 'rediscover-then-retry':
        return this.#rediscoverThenRetry(job, node, error)
      case 'fail':
        if (action.error === 'stream-wrote') this.#kinds.rememberLeaderOnly(job.query)
        if (action.error === 'as-is') throw error
        if (action.error === 'login-refused') throw this.#leadership.loginRefused([node], error)
        if (action.error === 'leader-unavailable') throw this.#leadership.unavailable(error)
        throw failureError(action.error, node, error)
    }
  }

  async #rediscoverThenRetry(job: Job, node: ClusterNode, error: unknown): Promise<void> {
    job.leaderRetried = true
    const leader = await this.#leadership.discover()
    if (leader && leader !== node && this.leaderUsable) return this.#retry(job)
    throw this.#leadership.unavailable(error)
  }

  #retry(job: Job): void {
    job.retry(this.factory as unknown as (...args: unknown[]) => PgQuery, this.factory.unsafe as unknown as (...args: unknown[]) => PgQuery)
    this.#run(job)
  }

  /**
   * A lane could not be opened. With lanes still open the node is alive and
   * just has no room for more (a slow login, 53300): it goes on with those.
   * With none, it is unreachable: banned, and what waited only for it is
   * routed again.
   */
  #laneFailed(node: ClusterNode, error: unknown): void {
    node.errors++
    if (node.lanes.size > 0) return
    this.nodeFailed(node, error)
    if (node.lanes.opening > 0) return
    if (node === this.leader) {
      for (const job of this.#forLeader.drain()) this.#onError(job, node, error).catch((failure) => job.reject(failure))
    }
    this.#rerouteReads(true)
  }

  /** COPY resolves with a stream while its connection is busy: it runs on the pool itself, once, as it is. */
  #copy(query: PgQuery, kind: StatementKind, ctx: RouteContext): void {
    try {
      const node = kind === 'write'
        ? this.requireLeader()
        : this.#replicas.pickWithRoom(null, NOTHING_TRIED) ?? this.#replicas.candidates(NOTHING_TRIED)[0] ?? this.requireLeader()
      query.canceller = node.canceller
      node.served++
      // Nothing may be pipelined behind a COPY: a session learns its position once the stream has ended.
      const session = ctx.session
      if (session) afterStream(query, () => session.track(this.positionAfter(node)))
      node.handler(query)
    } catch (error) {
      void nextTurn().then(() => query.reject(error)) // as in #run
    }
  }

  // -------------------------------------------------------------------------
  // Health and leadership (the monitor calls these too)

  nodeFailed(node: ClusterNode, error: unknown): void {
    const wasAvailable = node.failures === 0
    node.fail(error, this.options.ban)
    if (!wasAvailable) return
    if (node === this.leader) void this.discoverLeader()
    else if (!node.retired) this.emit('retire', { name: node.name, url: node.safeUrl, reason: 'unreachable', error: node.lastError })
  }

  /** A replica back from a failure is announced by the monitor, once a round has judged it fit (ClusterNode.verdictDue). */
  nodeAnswered(node: ClusterNode): void {
    node.succeed()
  }

  electLeader(writable: ClusterNode[]): void {
    const previous = this.leader
    this.#leadership.elect(writable)
    // Statements waiting for the leader go to the new one.
    if (this.leader !== previous) this.#pump(this.leader)
    if (this.leader !== previous && this.#forLeader.length > 0 && this.leader.lanes.canOpenNow(true)) this.leader.lanes.open()
  }

  discoverLeader(): Promise<ClusterNode | null> {
    return this.#leadership.discover()
  }

  requireLeader(): ClusterNode {
    return this.#leadership.require()
  }

  /** Checks that the descriptor's roles match the servers, once the first answers are in. */
  async checkRoles(): Promise<void> {
    await this.#monitor.tick()
    for (const node of this.nodes) {
      if (node !== this.leader && node.inRecovery === false) {
        this.#leadership.warn(`${node.name} (${node.safeUrl}) is listed as a replica but is not in recovery: it is a leader. Fix the descriptor.`)
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
      lanes: node.lanes.size,
      readLanes: node.lanes.reads.kept,
      served: node.served,
      transactions: node.transactions,
      errors: node.errors,
      lastError: node.lastError,
    }))
  }

  /**
   * Runs a transaction on the leader's pool, counted apart from statements.
   * A leader that cannot be reached becomes a LeaderUnavailableError, and
   * the search for a new leader starts.
   */
  async transaction<T>(run: (leader: ClusterNode['pool']) => Promise<T>): Promise<T> {
    let leader: ClusterNode
    try {
      leader = this.requireLeader()
    } catch (error) {
      await nextTurn() // as for a statement no node can take
      throw error
    }
    leader.inFlight++
    try {
      const result = await run(leader.pool)
      this.#catalog.mayHaveChanged() // the transaction may have run DDL the router never saw
      leader.transactions++
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
  async leaderPosition(): Promise<bigint | null> {
    const [row] = await this.leader.positionClient.unsafe(LEADER_POSITION)
    return parseLsn(row.lsn)
  }

  /**
   * Where a session stands after a statement that has ended on `node`, asked
   * on pgfollow's own connection to it (not pipelined, never the user's
   * pool): the leader's insert position, or what the replica had replayed.
   */
  async positionAfter(node: ClusterNode): Promise<bigint | null> {
    try {
      const rows = (await node.positionClient.unsafe(node === this.leader ? LEADER_POSITION : REPLICA_POSITION)) as { lsn: string }[]
      const lsn = parseLsn(rows[0].lsn)
      if (node !== this.leader) node.replayLsn = maxLsn(node.replayLsn, lsn)
      return lsn
    } catch {
      // The node died right after answering: the leader's position bounds what it could have shown.
      return this.leaderPosition().catch(() => UNREACHABLE_POSITION)
    }
  }

  /**
   * The node a read in this context goes to now, chosen as for a statement
   * (a session waits for a replica that has its position): where a reserved
   * connection whose first statement is a read binds.
   */
  async readNode(ctx: RouteContext): Promise<ClusterNode> {
    const position = ctx.session ? await ctx.session.settled() : null
    if (!this.#replicas.hasEligible(position, NOTHING_TRIED) && position !== null && this.#replicas.hasCandidate(NOTHING_TRIED)) {
      await this.#replicas.waitForReplay(position, NOTHING_TRIED)
    }
    const node = this.#replicas.pickWithRoom(position, NOTHING_TRIED) ??
      this.nodes.find((candidate) => this.#replicas.mayRead(candidate, position, NOTHING_TRIED))
    return node ?? this.#readFallback({ tried: NOTHING_TRIED, position } as Job)
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
    this.#addLanes(node)
    this.nodes.push(node)
    this.emit('add', { name: node.name, url: node.safeUrl })
    return node
  }

  get #ended(): boolean {
    return this.#leadership.ended
  }

  async end(options: { timeout?: number } = {}): Promise<void> {
    this.#leadership.ended = true
    this.#catalog.stop()
    // No lane opens from now on (a reserve() after the pool ended would open a connection that keeps the process alive).
    for (const node of this.nodes) node.lanes.end()
    this.#monitor.stop()
    clearInterval(this.#sweeper)
    clearInterval(this.#laneWindow)
    if (this.#strandTimer) clearTimeout(this.#strandTimer)
    for (const job of [...this.#reads.drain(), ...this.#forLeader.drain()]) job.reject(endedError())
    // postgres.js's end() can hang on a connection that is failing to log in
    // right then: let in-flight checks (each bounded by a timeout) finish first.
    // Lanes still opening are fetching types: ending them now would leave postgres.js's fetch rejected with nobody to catch it.
    const openings = Promise.allSettled(this.nodes.map((node) => node.lanes.opened()))
    await Promise.allSettled([
      this.#leadership.settled(),
      this.#monitor.tick(),
      this.#catalog.settled(),
      settledWithin(openings, this.options.connectTimeout),
    ])
    // As postgres.js: without a timeout, wait for what runs. A failing node runs nothing of the
    // user's, and postgres.js's end() would wait forever for a connection retrying a dead host.
    await Promise.all(this.nodes.map((node) => node.end(options.timeout ?? (node.failures > 0 ? 0 : undefined))))
  }
}
