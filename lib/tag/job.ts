/**
 * One statement on its way through the router, across retries.
 *
 * A class rather than an object literal, and nothing else per statement is
 * a literal either (BENCHMARKS.md, "What the profiling found and fixed").
 */
import type { StatementKind } from './classify.ts'
import type { Lane } from './lanes.ts'
import type { ClusterNode } from './node.ts'
import { interceptSettle, type PgQuery, watchStream } from './postgres-internals.ts'
import type { SessionPosition } from './session.ts'

/** Where a tag sends statements: by classification, or pinned. */
export interface RouteContext {
  intent: 'auto' | 'leader' | 'replica'
  session?: SessionPosition
}

const NOTHING_TRIED: readonly ClusterNode[] = []
const NEVER_DELIVERED = () => false

export class Job {
  readonly query: PgQuery
  readonly ctx: RouteContext
  kind: StatementKind
  /** The current attempt: the query itself, then fresh copies for retries. */
  attempt: PgQuery
  /** Nodes this statement ran on and failed (a few at most: an array beats a Set). */
  tried: readonly ClusterNode[] = NOTHING_TRIED
  leaderRetried = false
  /** A session read's position: only replicas that replayed it may serve. */
  position: bigint | null = null
  /** Whether a stream handed anything to the caller (then it never runs again). */
  readonly delivered: () => boolean
  /** Where the current attempt runs, while it runs. */
  node: ClusterNode | null = null
  lane: Lane | null = null
  /** An attempt given up on (its node stopped answering) whose late answer frees its lane. */
  abandoned: { attempt: PgQuery; lane: Lane; node: ClusterNode } | null = null
  slot = -1
  /** Set by the router: told when the current attempt settles. */
  onSettle: (attempt: PgQuery, ok: boolean, value: unknown) => void = () => {}
  readonly #settle: { resolve(value: unknown): void; reject(error: unknown): void }

  constructor(query: PgQuery, ctx: RouteContext, kind: StatementKind) {
    this.query = query
    this.attempt = query
    this.ctx = ctx
    this.kind = kind
    this.delivered = query.cursorFn || query.forEachFn ? watchStream(query) : NEVER_DELIVERED
    this.#settle = interceptSettle(query, (value) => this.onSettle(query, true, value), (error) => this.onSettle(query, false, error))
  }

  /** Settles the caller's promise (postgres.js's current settle functions). */
  resolve(value: unknown): void {
    this.#settle.resolve(value)
  }

  reject(error: unknown): void {
    this.#settle.reject(error)
  }

  get isStream(): boolean {
    return Boolean(this.query.cursorFn || this.query.forEachFn)
  }

  /** A copy of the statement that can run again elsewhere; its outcome comes to this job. */
  retry(factory: (...args: unknown[]) => PgQuery, unsafe: (...args: unknown[]) => PgQuery): PgQuery {
    const query = this.query
    const copy = query.tagged
      ? factory(query.strings, ...query.args)
      : unsafe(query.strings[0], query.args, { ...query.options, onexecute: undefined })
    copy.isRaw = query.isRaw
    copy.options.simple = query.options.simple
    copy.options.prepare = query.options.prepare
    copy.executed = true
    // Streams: the copy calls whatever callback the caller's query holds now (an async-iterator cursor swaps it per step).
    if (query.cursorFn) {
      copy.cursorRows = query.cursorRows
      copy.cursorFn = (rows) => query.cursorFn!(rows)
    }
    if (query.forEachFn) copy.forEachFn = (row, result) => query.forEachFn!(row, result)
    interceptSettle(copy, (value) => this.onSettle(copy, true, value), (error) => this.onSettle(copy, false, error))
    this.attempt = copy
    return copy
  }
}
