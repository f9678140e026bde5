/**
 * Typed errors with stable `code`s. Each message says what to do next, and
 * none carries a password: URLs pass through `redactUrl` before they are
 * quoted in a message.
 */

/** What a driver error carries that postgres.js users match on: kept on the pgfollow error that wraps it. */
const DRIVER_FIELDS = ['code', 'errno', 'address', 'port', 'syscall', 'severity'] as const

/**
 * Base class. `pgfollowCode` is pgfollow's stable code. `code` is the same,
 * except when the error wraps a driver error (its `cause`): then `code`
 * (and `errno`, `address`, `port`) are the driver's, so code written for
 * postgres.js (`if (error.code === 'ECONNREFUSED')`) keeps working, and
 * `instanceof LeaderUnavailableError` / `pgfollowCode` say what pgfollow knows.
 */
export class PgfollowError extends Error {
  readonly code: string
  readonly pgfollowCode: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.pgfollowCode = code
    this.code = code
    const cause = options?.cause as Record<string, unknown> | undefined
    if (cause && typeof cause === 'object' && typeof cause.code === 'string') {
      for (const field of DRIVER_FIELDS) if (cause[field] !== undefined) Object.assign(this, { [field]: cause[field] })
    }
  }
}

/** A descriptor, an option or a flag is wrong; nothing was changed. */
export class ConfigError extends PgfollowError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGFOLLOW_CONFIG', message, options)
  }
}

/** No node accepts writes right now; reads may still work. */
export class LeaderUnavailableError extends PgfollowError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGFOLLOW_LEADER_UNAVAILABLE', message, options)
  }
}

/** A read was pinned to replicas (`fallback: false`) and none is healthy. */
export class NoReplicaError extends PgfollowError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGFOLLOW_NO_REPLICA', message, options)
  }
}

/** A statement pinned to replicas (or streamed to one) turned out to write; it ran nowhere. */
export class WriteOnReplicaError extends PgfollowError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGFOLLOW_WRITE_ON_REPLICA', message, options)
  }
}

/** Bringing up, stopping or inspecting a local cluster failed. */
export class ClusterError extends PgfollowError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGFOLLOW_CLUSTER', message, options)
  }
}

/** Waiting for replicas to replay a position took longer than allowed. */
export class ReplayTimeoutError extends PgfollowError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGFOLLOW_REPLAY_TIMEOUT', message, options)
  }
}

/** A connection URL with its password replaced, for messages and tables. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    // Not a URL we can parse: hide everything between `:` and `@` after the scheme.
    return url.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@')
  }
}

/** An error's message with the password of `url` removed (drivers quote URLs in their errors). */
export function redactMessage(error: unknown, url: string): string {
  const message = error instanceof Error ? error.message : String(error)
  try {
    const password = decodeURIComponent(new URL(url).password)
    return password ? message.split(password).join('***') : message
  } catch {
    return message
  }
}
