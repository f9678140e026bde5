/**
 * `sql.reserve()` that routes. Clients such as kysely-postgres-js run every
 * statement on a reserved connection, so a reserve pinned to the leader
 * would take all reads off the replicas. A reserved connection here binds
 * to a node at its first statement: a read to a replica chosen as for any
 * read (in a session: one that has the session's position), anything else
 * (BEGIN, a write, what the classifier is unsure of) to the leader. Bound,
 * it stays, so one connection's state holds; the one exception is a
 * connection bound to a replica that meets a write (or a read the replica
 * refuses as a write, 25006): it moves to the leader for good, once the
 * statements sent before have ended. A replica connection holds no state a
 * write could need: statements that set state (SET, set_config, advisory
 * locks, temp tables) are not reads, so they bind to the leader first.
 * In a session every statement raises the session's position when it ends.
 */
import type postgres from 'postgres'
import type { StatementKind } from './classify.ts'
import { nodeUnreachable, readOnlyRefusal } from './failures.ts'
import { nextTurn } from './health.ts'
import type { ClusterNode, PgQuery } from './node.ts'
import type { RouteContext, Router } from './router.ts'
import { interceptSettle, isStream, streams, whenStreamEnds } from './streams.ts'
import { buildTag } from './tag.ts'

/** A reserved connection as postgres.js gives it: the tag and its helpers, plus `release()`. */
export function reserve(router: Router, ctx: RouteContext): Promise<postgres.ReservedSql> {
  const connection = new ReservedConnection(router, ctx)
  const sql = buildTag(router, (query: PgQuery) => connection.run(query))
  Object.assign(sql, {
    CLOSE: router.factory.CLOSE,
    END: router.factory.END,
    PostgresError: router.factory.PostgresError,
    release: () => connection.release(),
  })
  Object.defineProperty(sql, 'options', { get: () => router.poolOptions.view, enumerable: true })
  Object.defineProperty(sql, 'parameters', { get: () => connection.parameters, enumerable: true })
  // postgres.js waits for a free connection here; this one binds at its first statement.
  return Promise.resolve(sql as unknown as postgres.ReservedSql)
}

class ReservedConnection {
  readonly #router: Router
  readonly #ctx: RouteContext
  #node: ClusterNode | null = null
  #reserved: postgres.ReservedSql | null = null
  /** The reserved connection's own handler: executes a statement on that one connection. */
  #send: PgQuery['handler'] | null = null
  /** Binding (or moving to the leader) under way: later statements wait for it, in order. */
  #queue: Promise<void> | null = null
  #inFlight = 0
  #drainedWaiters: (() => void)[] = []
  #released = false

  constructor(router: Router, ctx: RouteContext) {
    this.#router = router
    this.#ctx = ctx
  }

  get parameters(): unknown {
    return (this.#node ?? this.#router.leader).pool.parameters
  }

  run(query: PgQuery, kind: StatementKind = this.#kindOf(query)): void {
    // Released: the statement is routed like any other (postgres.js would run it on some pooled connection).
    if (this.#released && !this.#queue && !this.#node) return void this.#router.route(query, this.#ctx)
    if (!this.#queue && this.#node && !this.#mustMove(kind)) return this.#execute(query)
    const next = (this.#queue ?? Promise.resolve())
      .then(() => this.#bindFor(kind))
      // No node to bind to: fail on a later turn, as the router does, so a retrying caller lets timers run.
      .then(() => this.#execute(query), (error) => nextTurn().then(() => query.reject(error)))
    this.#queue = next
    void next.then(() => {
      if (this.#queue === next) this.#queue = null
    })
  }

  release(): void {
    if (this.#released) return
    this.#released = true
    const unbind = () => this.#drained().then(() => this.#unbind())
    void (this.#queue ? this.#queue.then(unbind) : unbind())
  }

  #kindOf(query: PgQuery): StatementKind {
    if (this.#ctx.intent === 'replica') return 'read'
    // Classified even when pinned to the leader, as the router does: DDL sent here refreshes its catalog.
    const kind = this.#router.kindOf(query)
    return this.#ctx.intent === 'leader' ? 'write' : kind
  }

  #mustMove(kind: StatementKind): boolean {
    return this.#ctx.intent === 'auto' && kind === 'write' && this.#node !== null && this.#node !== this.#router.leader
  }

  async #bindFor(kind: StatementKind): Promise<void> {
    if (this.#node && !this.#mustMove(kind)) return
    if (this.#node) {
      await this.#drained()
      this.#unbind()
    }
    const node = kind === 'write' ? this.#router.requireLeader() : await this.#router.readNode(this.#ctx)
    const reserved = await node.pool.reserve()
    this.#node = node
    this.#reserved = reserved
    this.#send = (reserved`` as unknown as PgQuery).handler
  }

  #unbind(): void {
    this.#reserved?.release()
    this.#reserved = this.#send = this.#node = null
  }

  #execute(query: PgQuery): void {
    const node = this.#node!
    const session = this.#ctx.session
    // What a session learns after a statement: where its node stands once it ended (not pipelined).
    const learn = () => (session ? session.track(this.#router.positionAfter(node)) : Promise.resolve())
    query.canceller = node.canceller
    node.served++
    this.#inFlight++
    interceptSettle(
      query,
      (value, pass) => {
        if (isStream(value)) {
          // A COPY holds the connection until its stream ends.
          whenStreamEnds(value, () => (this.#ended(), learn()))
          pass(value)
        } else {
          this.#ended()
          learn().then(() => pass(value))
        }
      },
      (error, pass, passResolved) => {
        this.#ended()
        node.errors++
        if (nodeUnreachable(error)) this.#router.nodeFailed(node, error)
        if (readOnlyRefusal(error) && node !== this.#router.leader && this.#ctx.intent === 'auto' && !streams(query)) {
          // The replica refused a hidden write, so nothing ran: run it on the leader, where this connection moves.
          const copy = this.#copyOf(query)
          copy.resolve = passResolved
          copy.reject = pass
          return this.run(copy, 'write')
        }
        pass(error)
      },
    )
    this.#send!(query)
  }

  /** A statement that never ran, ready to run again (postgres.js marks a query with where it ran). */
  #copyOf(query: PgQuery): PgQuery {
    const Query = this.#router.Query as unknown as new (...args: unknown[]) => PgQuery
    const copy = new Query(query.tagged ? query.strings : [query.strings[0]], query.args, query.handler, query.canceller, {
      ...query.options,
      onexecute: undefined,
    })
    copy.isRaw = query.isRaw
    ;(copy as { onlyDescribe?: unknown }).onlyDescribe = (query as { onlyDescribe?: unknown }).onlyDescribe
    copy.executed = true
    return copy
  }

  #ended(): void {
    if (--this.#inFlight === 0) { for (const waiter of this.#drainedWaiters.splice(0)) waiter() }
  }

  #drained(): Promise<void> {
    return this.#inFlight === 0 ? Promise.resolve() : new Promise((resolve) => this.#drainedWaiters.push(resolve))
  }
}
