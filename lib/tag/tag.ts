/**
 * The `sql` tag users hold. Like postgres.js's own, it is a function built
 * by one factory with methods attached; the factory serves the root tag,
 * the pinned `sql.leader` / `sql.replica` and causal sessions, which differ
 * only in their route context. Statements are real postgres.js queries
 * (lazy, with .values(), .cursor(), fragments...) whose execution is handed
 * to the router instead of one pool.
 */
import { readFile } from 'node:fs/promises'
import type postgres from 'postgres'
import type { PgQuery } from './node.ts'
import type { NodeStatus, RouteContext, Router } from './router.ts'
import { SessionPosition } from './session.ts'

type Tag = postgres.Sql<Record<string, never>>
/** postgres.js's call signatures (the tag and the helpers), which `Omit` alone would drop. */
type Callable = postgres.ISql<Record<string, never>>
type TransactionFn<T> = (sql: postgres.TransactionSql<Record<string, never>>) => T | Promise<T>

/** What a pinned or session tag adds to postgres.js's `sql`. */
export interface RoutedSql extends Callable, Omit<Tag, 'begin' | 'end' | keyof Callable> {
  /** Statements pinned to the leader. */
  leader: RoutedSql
  /** Statements pinned to replicas (with `fallback: false` and none healthy: NoReplicaError). */
  replica: RoutedSql
  /** A transaction, always on the leader. */
  begin<T>(fn: TransactionFn<T>): Promise<Awaited<T>>
  begin<T>(options: string, fn: TransactionFn<T>): Promise<Awaited<T>>
}

/** A causal session: read-your-writes and monotonic reads by WAL position. */
export interface SessionSql extends RoutedSql {
  /** The session's position, serialisable (cookie, header); resume with `sql.session({ after: token })`. */
  readonly token: string
}

export type HealthEvent = 'retire' | 'restore' | 'leader' | 'warning'

/** The tag `connect()` returns. */
export interface PgfollowSql extends RoutedSql {
  /** A causal session; `after` resumes one from its token. */
  session(options?: { after?: string }): SessionSql
  /** Per node: role, state, lag, statements in flight and served, errors. */
  status(): NodeStatus[]
  /** Health events: retire / restore (a replica leaves or rejoins the reads), leader (writes moved), warning. */
  on(event: HealthEvent, listener: (detail: any) => void): PgfollowSql
  off(event: HealthEvent, listener: (detail: any) => void): PgfollowSql
  /** Runs a monitor round now: lag, health, roles and the function catalog are current when it resolves. */
  refresh(): Promise<void>
  /** Ends every pool and the monitor. */
  end(options?: { timeout?: number }): Promise<void>
}

/** Builds a tag for one route context; `pins` adds `.leader` / `.replica` (not on pinned tags themselves). */
export function createSql(router: Router, ctx: RouteContext, pins = true): RoutedSql {
  const handler = Object.assign((query: PgQuery) => router.route(query, ctx), { debug: false })
  const factory = router.factory as unknown as Tag

  function sql(): unknown {
    // `arguments` passed on as they are: no rest array and spread per statement.
    const made = Reflect.apply(factory as unknown as (...args: unknown[]) => unknown, undefined, arguments)
    // Identifiers and builders (sql('name'), sql(row)) are values, not statements: only queries are routed.
    if (made instanceof router.Query) (made as PgQuery).handler = handler
    return made
  }

  // Arguments passed on as given, so postgres.js's own defaults apply, and
  // so does its `unsafe(text, options)` form (it looks at arguments.length).
  function unsafe(_text: string, _args?: unknown[], _options?: Record<string, unknown>): unknown {
    const query = Reflect.apply(factory.unsafe as unknown as (...a: unknown[]) => PgQuery, undefined, arguments) as PgQuery
    query.handler = handler
    return query
  }

  function file(path: string, args: unknown[] = [], options: Record<string, unknown> = {}): unknown {
    const query = (factory.unsafe as unknown as (...a: unknown[]) => PgQuery)('', args, options)
    // Classified once its text is known: the file is read when the query runs.
    query.handler = Object.assign(
      (q: PgQuery) => readFile(path, 'utf8').then((text) => ((q.strings = [text]), handler(q)), (error) => q.reject(error)),
      { debug: false },
    )
    return query
  }

  const leaderTag = () => router.requireLeader().pool
  Object.assign(sql, {
    unsafe,
    file,
    json: factory.json,
    array: factory.array,
    typed: factory.typed,
    types: factory.types,
    CLOSE: factory.CLOSE,
    END: factory.END,
    PostgresError: factory.PostgresError,
    begin: async (...args: unknown[]) => {
      const result = await router.transaction((leader) => (leader.begin as (...a: unknown[]) => Promise<unknown>)(...args))
      // A committed transaction moves the session to the leader's position.
      if (ctx.session) ctx.session.raise(await router.leaderPosition())
      return result
    },
    reserve: () => leaderTag().reserve(),
    listen: (...args: unknown[]) => (leaderTag().listen as (...a: unknown[]) => unknown)(...args),
    notify: (channel: string, payload: string) => leaderTag().notify(channel, payload),
    largeObject: (...args: unknown[]) => (leaderTag().largeObject as (...a: unknown[]) => unknown)(...args),
  })
  Object.defineProperty(sql, 'options', { get: () => router.leader.pool.options })
  Object.defineProperty(sql, 'parameters', { get: () => router.leader.pool.parameters })
  if (pins) {
    Object.assign(sql, {
      leader: createSql(router, { ...ctx, intent: 'leader' }, false),
      replica: createSql(router, { ...ctx, intent: 'replica' }, false),
    })
  }
  if (ctx.session) {
    const session = ctx.session
    Object.defineProperty(sql, 'token', { get: () => session.token, enumerable: true })
  }
  return sql as unknown as RoutedSql
}

/** The root tag: routing plus sessions, status, events and end. */
export function createRootSql(router: Router): PgfollowSql {
  const sql = createSql(router, { intent: 'auto' }) as unknown as PgfollowSql
  Object.assign(sql, {
    session: (options: { after?: string } = {}) => createSql(router, { intent: 'auto', session: new SessionPosition(options.after) }),
    status: () => router.status(),
    on: (event: HealthEvent, listener: (detail: unknown) => void) => (router.on(event, listener), sql),
    off: (event: HealthEvent, listener: (detail: unknown) => void) => (router.off(event, listener), sql),
    refresh: () => router.refresh(),
    end: (options?: { timeout?: number }) => router.end(options),
  })
  return sql
}
