/**
 * A causal session's position: the WAL position its reads must not go back
 * behind. Writes raise it to the leader's insert LSN after commit; reads
 * raise it to what the serving node had replayed, so the next read never
 * sees an older state, whichever node serves it.
 */
import { ConfigError } from './errors.ts'
import { formatLsn, maxLsn, parseLsn } from './lsn.ts'

export class SessionPosition {
  #position: bigint | null
  #pending = new Set<Promise<unknown>>()

  constructor(after?: string) {
    this.#position = after === undefined ? null : parseToken(after)
  }

  /** Raises the position when `lsn` is ahead (a position never moves back). */
  raise(lsn: bigint | null): void {
    this.#position = maxLsn(this.#position, lsn)
  }

  /** Tracks a position still on its way, so the next statement waits for it. */
  track(promise: Promise<bigint | null>): Promise<void> {
    const raised = promise.then(
      (lsn) => this.raise(lsn),
      () => {},
    )
    this.#pending.add(raised)
    raised.finally(() => this.#pending.delete(raised))
    return raised
  }

  /** The position once every tracked update has landed. */
  async settled(): Promise<bigint | null> {
    while (this.#pending.size > 0) await Promise.all(this.#pending)
    return this.#position
  }

  get current(): bigint | null {
    return this.#position
  }

  /** Short, serialisable: the LSN as PostgreSQL prints it, e.g. `0/16B3748`. */
  get token(): string {
    return formatLsn(this.#position ?? 0n)
  }
}

/** Parses a session token; a bad one is a ConfigError, not a silent reset to zero. */
export function parseToken(token: string): bigint {
  try {
    const lsn = parseLsn(token)
    if (lsn === null) throw new Error('empty')
    return lsn
  } catch {
    throw new ConfigError(`Not a pgfollow session token: ${JSON.stringify(token).slice(0, 40)}. Pass the value of \`session.token\` unchanged.`)
  }
}
