/**
 * Typed errors with stable `code`s. Each message says what to do next, and
 * none carries a password: URLs pass through `redactUrl` before they are
 * quoted in a message.
 */

/** Base class: `code` is stable and safe to switch on. */
export class PgfollowError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
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
