/**
 * Seeing a statement's outcome before its caller does, for statements the
 * router cannot wrap once and for all: streams (`.cursor()`, `.forEach()`,
 * COPY through `.readable()` / `.writable()`) and statements on reserved
 * connections. Nothing may be pipelined behind a stream (a COPY would carry
 * it inside its data), so a session learns where it stands once the stream
 * has ended, before the caller sees the end.
 */
import { finished } from 'node:stream'
import type { PgQuery } from './node.ts'

type Settle = (value: unknown) => void

/**
 * Routes `query`'s resolve and reject through the given hooks, which call
 * `pass` to hand the outcome on (a rejection may be turned into a result
 * with `passResolved`, when a retry answered). A cursor's async iterator replaces
 * `resolve` / `reject` for every batch, so the hooks are accessors that
 * keep wrapping whatever postgres.js sets.
 */
export function interceptSettle(
  query: PgQuery,
  onResolve: (value: unknown, pass: Settle) => void,
  onReject: (error: unknown, pass: Settle, passResolved: Settle) => void = (error, pass) => pass(error),
): void {
  let resolve: Settle = query.resolve
  let reject: Settle = query.reject
  const resolved = (value: unknown) => onResolve(value, resolve)
  const rejected = (error: unknown) => onReject(error, reject, resolve)
  Object.defineProperty(query, 'resolve', { configurable: true, get: () => resolved, set: (fn: Settle) => void (resolve = fn) })
  Object.defineProperty(query, 'reject', { configurable: true, get: () => rejected, set: (fn: Settle) => void (reject = fn) })
}

/**
 * Runs `learn` when `query` has ended, and only then lets the caller see
 * the end. A COPY resolves with its stream at once; it has ended when the
 * stream has. A failed statement changed nothing: nothing to learn.
 */
export function afterStream(query: PgQuery, learn: () => Promise<void>): void {
  interceptSettle(query, (value, pass) => {
    if (isStream(value)) {
      whenStreamEnds(value, learn)
      pass(value)
    } else {
      learn().then(() => pass(value))
    }
  })
}

/**
 * Runs `learn` once a COPY stream has ended. A COPY FROM STDIN's stream
 * finishes (and the caller's `pipeline()` resolves) only after `learn`, so
 * a session's token already holds the write; a COPY TO's stream has
 * delivered everything at its end, and `learn` is tracked before the
 * caller's own end handlers run (it is registered before they can be).
 */
export function whenStreamEnds(stream: NodeJS.ReadableStream | NodeJS.WritableStream, learn: () => Promise<void>): void {
  const writable = stream as { _final?: (callback: (error?: Error | null) => void) => void }
  if (typeof writable._final === 'function') {
    const final = writable._final
    writable._final = function (callback) {
      final.call(this, (error) => (error ? callback(error) : learn().then(() => callback(), callback)))
    }
  } else {
    finished(stream, () => void learn())
  }
}

export function isStream(value: unknown): value is NodeJS.ReadableStream | NodeJS.WritableStream {
  return typeof (value as { pipe?: unknown } | null)?.pipe === 'function' && typeof (value as { on?: unknown }).on === 'function'
}

/** Streams deliver rows (or data) as they come: such a statement cannot be run again elsewhere. */
export function streams(query: PgQuery): boolean {
  return Boolean(query.cursorFn || query.forEachFn || query.streaming)
}
