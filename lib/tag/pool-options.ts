/**
 * One set of postgres.js options for every node's pool. postgres.js reads
 * `parsers`, `serializers` and `transform` from its options object when a
 * connection is made and when rows are parsed, and clients such as Drizzle
 * change `sql.options.parsers[oid]` after creating the client. So every
 * node's parsed options hold the very same nested objects (a mutation made
 * through any of them reaches all), and `sql.options` is a view whose
 * top-level writes go to every pool, including pools created later.
 */
import postgres from 'postgres'
import { INTERNAL_STATEMENTS } from './queries.ts'

/** postgres.js's parsed options (its `sql.options`), as far as pgfollow touches them. */
export type ParsedOptions = Record<string, unknown> & {
  debug: unknown
  shared: { retries: number; typeArrayMap: Record<number, number> }
}

type DebugHook = (connection: number, query: string, parameters: unknown[], types: unknown[]) => void

/** Nested objects every pool must share by identity: postgres.js and its clients mutate them in place. */
const SHARED_BY_IDENTITY = ['parsers', 'serializers', 'transform', 'types'] as const

export class PoolOptions {
  readonly #user: postgres.Options<Record<string, postgres.PostgresType>>
  readonly #connectTimeoutSeconds: number
  /** Every pool's parsed options, the first one's nested objects shared by all. */
  readonly #pools: ParsedOptions[] = []
  /** Top-level values set through the view, applied to pools created later too. */
  readonly #overrides = new Map<PropertyKey, unknown>()
  /** The user's debug hook as given (pools hold a filtered copy). */
  #debug: unknown
  /** What `sql.options` returns. */
  readonly view: ParsedOptions

  constructor(user: postgres.Options<Record<string, postgres.PostgresType>>, connectTimeoutMs: number) {
    this.#user = user
    this.#connectTimeoutSeconds = connectTimeoutMs / 1000
    this.#debug = user.debug ?? false
    this.view = new Proxy({} as ParsedOptions, {
      get: (_, key) => (key === 'debug' ? this.#debug : Reflect.get(this.#first(), key)),
      set: (_, key, value) => {
        if (key === 'debug') this.#debug = value
        this.#overrides.set(key, value)
        for (const pool of this.#pools) this.#apply(pool, key, value)
        return true
      },
      has: (_, key) => key in this.#first(),
      ownKeys: () => Reflect.ownKeys(this.#first()),
      getOwnPropertyDescriptor: (_, key) => {
        const descriptor = Reflect.getOwnPropertyDescriptor(this.#first(), key)
        return descriptor && { ...descriptor, configurable: true, value: key === 'debug' ? this.#debug : descriptor.value }
      },
    })
  }

  /** The user's debug hook (the tag's queries capture full stacks when it is set, as postgres.js's do). */
  get debug(): unknown {
    return this.#debug
  }

  /**
   * A pool for `url` with the user's options: they win over pgfollow's only
   * default (`connect_timeout` from `connectTimeout`), and it shares the
   * nested option objects with every other pool.
   */
  pool(url: string, own: { max?: number; onclose?: (connectionId: number) => void; backoff?: (retries: number) => number } = {}): postgres.Sql {
    // postgres.js parses options when a pool is made (making one connects nothing);
    // a parsed options object passed back is used as it is.
    const parsed = postgres(url, { connect_timeout: this.#connectTimeoutSeconds, ...this.#user }).options as unknown as ParsedOptions
    const first = this.#pools[0]
    if (first) {
      for (const key of SHARED_BY_IDENTITY) parsed[key] = first[key]
      parsed.shared = { retries: 0, typeArrayMap: first.shared.typeArrayMap }
    }
    this.#apply(parsed, 'debug', this.#debug)
    for (const [key, value] of this.#overrides) this.#apply(parsed, key, value)
    this.#pools.push(parsed)
    // The router's lanes have a pool of their own, of their own size; its onclose runs before the user's.
    if (own.max) parsed.max = own.max
    if (own.backoff) parsed.backoff = own.backoff
    if (own.onclose) {
      const user = parsed.onclose as ((id: number) => void) | undefined
      parsed.onclose = (id: number) => (own.onclose!(id), user?.(id))
    }
    return postgres(parsed as never)
  }

  #apply(pool: ParsedOptions, key: PropertyKey, value: unknown): void {
    ;(pool as Record<PropertyKey, unknown>)[key] = key === 'debug' ? withoutInternal(value) : value
  }

  #first(): ParsedOptions {
    return this.#pools[0] ?? ({} as ParsedOptions)
  }
}

/** The user's debug hook, blind to the statements pgfollow runs itself (positions, checks). */
function withoutInternal(debug: unknown): unknown {
  if (typeof debug !== 'function') return debug
  const hook = debug as DebugHook
  return (connection: number, query: string, parameters: unknown[], types: unknown[]) => {
    if (!INTERNAL_STATEMENTS.has(query)) hook(connection, query, parameters, types)
  }
}
