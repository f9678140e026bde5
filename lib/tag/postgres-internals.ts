/**
 * Every postgres.js internal the tag relies on, in one place. postgres.js
 * exposes no routing hook, so the tag drives its Query objects from outside:
 * it sets a query's handler, takes over its settle functions, watches a
 * cursor's callbacks and learns which connection a statement ran on. These
 * are internals of postgres.js 3.4.9 (the version package.json pins
 * exactly); `checkPostgresInternals` checks them once per pool, so another
 * version fails at `connect()` with a message instead of misrouting later.
 */
import type postgres from 'postgres'

/** The postgres.js version whose internals this module was written against. */
export const POSTGRES_VERSION = '3.4.9'

/** A postgres.js connection, as `options.onexecute` receives it. */
export interface PgConnection {
  readonly id: number
  execute(query: PgQuery): boolean
  /** Closes the socket at once; what was on it fails with CONNECTION_DESTROYED. */
  terminate(): void
}

/** The internals of a postgres.js Query the router relies on. */
export interface PgQuery extends Promise<unknown> {
  strings: string[] & { raw?: readonly string[] }
  args: unknown[]
  tagged: boolean
  handler: ((query: PgQuery) => unknown) & { debug?: unknown }
  canceller: unknown
  options: Record<string, unknown> & { onexecute?: (connection: PgConnection) => unknown }
  resolve: (value: unknown) => void
  reject: (error: unknown) => void
  executed: boolean
  /** Set by postgres.js when the query is written to a connection; unset while it waits for one. */
  state?: unknown
  cancel(): unknown
  isRaw?: boolean | 'values'
  cursorFn?: ((rows: unknown[]) => unknown) | undefined
  forEachFn?: ((row: unknown, result: unknown) => unknown) | undefined
  cursorRows?: number
  /** COPY: the query resolves with a stream while the connection is still busy. */
  streaming?: boolean
  /** Cancelled before it was sent: true (postgres.js has rejected it already). */
  cancelled?: unknown
}

/**
 * Checks that `pool` is a postgres.js with the internals above; returns its
 * Query class (to recognise fragments nested in a statement).
 */
export function checkPostgresInternals(pool: postgres.Sql): new (...args: never[]) => PgQuery {
  const probe = pool`` as unknown as PgQuery
  const missing = [
    typeof probe.handler === 'function' ? null : 'Query.handler',
    typeof probe.canceller === 'function' ? null : 'Query.canceller',
    typeof probe.resolve === 'function' ? null : 'Query.resolve',
    typeof probe.reject === 'function' ? null : 'Query.reject',
    typeof probe.cancel === 'function' ? null : 'Query.cancel()',
    probe.executed === false ? null : 'Query.executed',
    probe.options !== null && typeof probe.options === 'object' ? null : 'Query.options',
    Array.isArray(probe.strings) && Array.isArray(probe.args) && probe.tagged === true ? null : 'Query.strings/args/tagged',
    'state' in probe ? null : 'Query.state',
    typeof (pool as { reserve?: unknown }).reserve === 'function' ? null : 'sql.reserve()',
  ].filter(Boolean)
  if (missing.length > 0) {
    throw new Error(
      `pgfollow drives postgres.js ${POSTGRES_VERSION} queries from outside and this postgres.js lacks ${
        missing.join(', ')
      }. Install postgres@${POSTGRES_VERSION} exactly (npm install postgres@${POSTGRES_VERSION}).`,
    )
  }
  return Object.getPrototypeOf(probe).constructor
}

/** The pool's own handler and canceller, taken from an unexecuted query. */
export function poolHandler(pool: postgres.Sql | postgres.ReservedSql): { handler: PgQuery['handler']; canceller: unknown } {
  const probe = pool`` as unknown as PgQuery
  return { handler: probe.handler, canceller: probe.canceller }
}

/**
 * Takes over a query's settle functions. postgres.js reassigns `resolve`
 * and `reject` on every step of an async-iterator cursor, so for a cursor
 * they become accessors: what postgres.js assigns becomes the inner
 * function, and postgres.js always calls ours first.
 */
export function interceptSettle(
  query: PgQuery,
  onResolve: (value: unknown) => void,
  onReject: (error: unknown) => void,
): { resolve(value: unknown): void; reject(error: unknown): void } {
  let resolve = query.resolve
  let reject = query.reject
  if (!query.cursorFn) {
    // Only a cursor reassigns them: plain fields keep the query a fast object.
    query.resolve = onResolve
    query.reject = onReject
    return { resolve, reject }
  }
  Object.defineProperty(query, 'resolve', { configurable: true, get: () => onResolve, set: (fn) => (resolve = fn) })
  Object.defineProperty(query, 'reject', { configurable: true, get: () => onReject, set: (fn) => (reject = fn) })
  // The caller's promise: whatever postgres.js assigned last.
  return { resolve: (value) => resolve(value), reject: (error) => reject(error) }
}

/**
 * Counts what a stream hands to the caller (forEach rows, cursor batches);
 * `delivered()` tells whether anything reached it. The async-iterator cursor
 * reassigns `cursorFn` per step: an accessor keeps counting.
 */
export function watchStream(query: PgQuery): () => boolean {
  let delivered = false
  const wrap = <F extends ((...args: any[]) => unknown) | undefined>(fn: F): F =>
    (fn && ((...args: unknown[]) => ((delivered = true), fn(...args)))) as F
  let cursorFn = wrap(query.cursorFn)
  let forEachFn = wrap(query.forEachFn)
  Object.defineProperty(query, 'cursorFn', { configurable: true, get: () => cursorFn, set: (fn) => (cursorFn = wrap(fn)) })
  Object.defineProperty(query, 'forEachFn', { configurable: true, get: () => forEachFn, set: (fn) => (forEachFn = wrap(fn)) })
  return () => delivered
}

/**
 * Calls `seen` with the connection a statement is written to. postgres.js
 * calls `onexecute` only when the statement went out in one piece (not for
 * a first prepared execution with parameters), so callers use it on
 * statements without parameters.
 */
export function onConnection(query: PgQuery, seen: (connection: PgConnection) => void): void {
  const previous = query.options.onexecute
  query.options.onexecute = (connection) => {
    seen(connection)
    return previous ? previous(connection) : true
  }
}

/**
 * Makes a pool's transactions safe against a connection that closes under
 * them. postgres.js 3.4.9's `begin()` answers a failure inside the
 * transaction with ROLLBACK on the same connection, also when the failure
 * was that connection closing; the write then throws from a `setImmediate`
 * (its socket is gone), an uncaught exception nobody can catch. `begin()`
 * opens its transaction through the pool's own `unsafe` with an `onexecute`
 * that receives the connection, so wrapping `unsafe` learns each
 * transaction's connection; the returned `closed(id)` (for the pool's
 * `onclose`) terminates it, and whatever is sent on it afterwards fails
 * with CONNECTION_DESTROYED instead.
 */
export function guardTransactions(pool: postgres.Sql): (connectionId: number) => void {
  const connections = new Map<number, PgConnection>()
  const unsafe = pool.unsafe as (...args: unknown[]) => unknown
  ;(pool as { unsafe: unknown }).unsafe = function (this: unknown, _text: unknown, _args: unknown, options: { onexecute?: unknown }) {
    if (arguments.length === 3 && options && typeof options.onexecute === 'function') {
      const opened = options.onexecute as (connection: PgConnection) => unknown
      options.onexecute = (connection: PgConnection) => (connections.set(connection.id, connection), opened(connection))
    }
    return Reflect.apply(unsafe, this, arguments)
  }
  return (connectionId) => {
    const connection = connections.get(connectionId)
    if (!connection) return
    connections.delete(connectionId)
    connection.terminate()
  }
}
