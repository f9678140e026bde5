/**
 * The `sql` tag users hold. Like postgres.js's own, it is a function built
 * by one factory with methods attached; the factory serves the root tag,
 * the pinned `sql.leader` / `sql.replica`, causal sessions and reserved
 * connections, which differ only in the handler their statements run
 * through. Statements are real postgres.js queries (lazy, with .values(),
 * .cursor(), fragments...) whose execution is handed to the router instead
 * of one pool.
 */
import { readFile } from 'node:fs/promises'
import type postgres from 'postgres'
import type { PgQuery } from './node.ts'
import { reserve } from './reserve.ts'
import type { NodeStatus, RouteContext, Router } from './router.ts'
import { SessionPosition } from './session.ts'

/** postgres.js's own "no custom types" (`{}`), kept so pgfollow's types stay identical to its `Sql`. */
// deno-lint-ignore ban-types
export type NoCustomTypes = {}

/** postgres.js's `sql`, pinned to the leader or to replicas (`sql.leader`, `sql.replica`). */
export interface PinnedSql<TTypes extends Record<string, unknown> = NoCustomTypes> extends postgres.Sql<TTypes> {}

/** postgres.js's `sql`, routed per statement, with the pinned variants. */
export interface RoutedSql<TTypes extends Record<string, unknown> = NoCustomTypes> extends postgres.Sql<TTypes> {
  /** Statements pinned to the leader. */
  readonly leader: PinnedSql<TTypes>
  /** Statements pinned to replicas (with `fallback: false` and none healthy: NoReplicaError). */
  readonly replica: PinnedSql<TTypes>
}

/**
 * A causal session: read-your-writes and monotonic reads by WAL position.
 * A complete postgres.js `sql` (clients such as Drizzle and Kysely take it
 * as their client); its `end()` ends nothing (the pools belong to the root
 * tag) and resolves at once.
 */
export interface SessionSql<TTypes extends Record<string, unknown> = NoCustomTypes> extends RoutedSql<TTypes> {
  /** The session's position, serialisable (cookie, header); resume with `sql.session({ after: token })`. */
  readonly token: string
}

export type HealthEvent = 'retire' | 'restore' | 'leader' | 'warning'

/** The tag `connect()` returns: postgres.js's `sql`, plus what pgfollow adds. */
export interface PgfollowSql<TTypes extends Record<string, unknown> = NoCustomTypes> extends RoutedSql<TTypes> {
  /** A causal session; `after` resumes one from its token. */
  session(options?: { after?: string }): SessionSql<TTypes>
  /** Per node: role, state, lag, statements in flight and served, errors. */
  status(): NodeStatus[]
  /** Health events: retire / restore (a replica leaves or rejoins the reads), leader (writes moved), warning. */
  on(event: HealthEvent, listener: (detail: any) => void): PgfollowSql<TTypes>
  off(event: HealthEvent, listener: (detail: any) => void): PgfollowSql<TTypes>
  /** Runs a monitor round now: lag, health, roles and the function catalog are current when it resolves. */
  refresh(): Promise<void>
}

type Handler = ((query: PgQuery) => unknown) & { debug?: unknown }
type AnyFn = (...args: unknown[]) => unknown

/**
 * The callable and postgres.js's per-tag helpers (`unsafe`, `file`, `json`,
 * ...), every statement made with it run by `run`. Statements are made here
 * rather than by a pool's tag, so postgres.js's origin stack (it keeps 4
 * frames) still ends at the user's call site.
 */
export function buildTag(router: Router, run: (query: PgQuery) => unknown): AnyFn {
  const factory = router.factory as unknown as postgres.Sql & AnyFn
  const Query = router.Query as unknown as new (...args: unknown[]) => PgQuery
  const canceller = router.nodes[0].canceller
  const handler = run as Handler
  // postgres.js captures a full stack per statement when debug is on: so do we, whenever it is set.
  Object.defineProperty(handler, 'debug', { get: () => router.poolOptions.debug })

  function sql(strings: unknown, ...args: unknown[]): unknown {
    if (strings && Array.isArray((strings as { raw?: unknown }).raw)) return new Query(strings, args, handler, canceller)
    // Identifiers and builders (sql('name'), sql(row)) are values, not statements.
    return Reflect.apply(factory, undefined, [strings, ...args])
  }

  function unsafe(text: string, args: unknown = [], options: Record<string, unknown> = {}): unknown {
    // postgres.js's `unsafe(text, options)` form.
    if (arguments.length === 2 && !Array.isArray(args)) (options = args as Record<string, unknown>), (args = [])
    const list = args as unknown[]
    return new Query([text], list, handler, canceller, {
      prepare: false,
      ...options,
      simple: 'simple' in options ? options.simple : list.length === 0,
    })
  }

  function file(path: string, args: unknown = [], options: Record<string, unknown> = {}): unknown {
    if (arguments.length === 2 && !Array.isArray(args)) (options = args as Record<string, unknown>), (args = [])
    const list = args as unknown[]
    // Classified once its text is known: the file is read when the query runs.
    const readThenRun = (query: PgQuery) =>
      readFile(path, 'utf8').then((text) => {
        query.strings = [text]
        handler(query)
      }, (error) => query.reject(error))
    Object.defineProperty(readThenRun, 'debug', { get: () => router.poolOptions.debug })
    return new Query([], list, readThenRun, canceller, { ...options, simple: 'simple' in options ? options.simple : list.length === 0 })
  }

  return Object.assign(sql, {
    unsafe,
    file,
    json: factory.json,
    array: factory.array,
    typed: factory.typed,
    types: factory.types,
    notify: (channel: string, payload: string) => router.requireLeader().pool.notify(channel, payload),
  })
}

/** Builds a tag for one route context; `pins` adds `.leader` / `.replica` (not on pinned tags themselves). */
export function createSql(router: Router, ctx: RouteContext, pins = true): RoutedSql {
  const sql = buildTag(router, (query: PgQuery) => router.route(query, ctx))
  const leaderPool = () => router.requireLeader().pool
  Object.assign(sql, {
    CLOSE: router.factory.CLOSE,
    END: router.factory.END,
    PostgresError: router.factory.PostgresError,
    begin: async (...args: unknown[]) => {
      const result = await router.transaction((leader) => (leader.begin as AnyFn)(...args) as Promise<unknown>)
      // A committed transaction moves the session to the leader's position.
      if (ctx.session) ctx.session.raise(await router.leaderPosition())
      return result
    },
    reserve: () => reserve(router, ctx),
    listen: (...args: unknown[]) => (leaderPool().listen as AnyFn)(...args),
    subscribe: (...args: unknown[]) => (leaderPool().subscribe as AnyFn)(...args),
    largeObject: (...args: unknown[]) => (leaderPool().largeObject as AnyFn)(...args),
    // The pools belong to the root tag: ending a view of it (a session, a pinned tag) ends nothing.
    end: () => Promise.resolve(),
    close: () => Promise.resolve(),
  })
  Object.defineProperty(sql, 'options', { get: () => router.poolOptions.view, enumerable: true })
  Object.defineProperty(sql, 'parameters', { get: () => router.leader.pool.parameters, enumerable: true })
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
    session: (options: { after?: string } = {}) => createSql(router, { intent: 'auto', session: new SessionPosition(options.after, router) }),
    status: () => router.status(),
    on: (event: HealthEvent, listener: (detail: unknown) => void) => (router.on(event, listener), sql),
    off: (event: HealthEvent, listener: (detail: unknown) => void) => (router.off(event, listener), sql),
    refresh: () => router.refresh(),
    end: (options?: { timeout?: number }) => router.end(options),
    // postgres.js's close(): connections end, the pools open new ones when used again.
    close: () => Promise.all(router.nodes.map((node) => (node.pool as unknown as { close(): Promise<void> }).close())).then(() => {}),
  })
  return sql
}
