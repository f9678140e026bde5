/**
 * What the leader's catalog says about functions and views, for the
 * classifier: which names call a volatile function that is not known to be
 * read-only (such a statement goes to the leader, as pgpool-II does), which
 * user views or policy-protected tables call one when read, which operators,
 * casts, types and domains run one without naming it (and where values of
 * such a type flow), and which function names and operator symbols exist at
 * all (any other is of one created since the last look: the leader too).
 *
 * Names are matched without their schema, so overloads and schemas fold
 * together on the safe side: if any function of a name is volatile and not
 * read-only, every call of that name goes to the leader.
 *
 * Loaded right after connect, checked on a schedule (a cheap fingerprint;
 * the catalog is read again only when it changed), and read again after DDL
 * sent through the tag. Each change bumps `version`, which the router's
 * classification caches follow.
 */
import type postgres from 'postgres'
import { classifyStatement, COMMON_FUNCTIONS, COMMON_OPERATORS, type FunctionKnowledge, readOnlyBuiltin } from './classify.ts'
import { unrefTimer, withTimeout } from './health.ts'
import { CATALOG_CONTENTS, CATALOG_FINGERPRINT } from './queries.ts'

/** Monitor rounds between two fingerprint checks. */
const ROUNDS_PER_CHECK = 5
/** A call of an unknown name, or a transaction, asks for a check at most this often, ms. */
const RECHECK_AT_MOST_EVERY = 1_000

interface VolatileRow {
  name: string
  schema: string
  builtin: boolean
}

interface DefinitionRow {
  name: string
  /** A view's query, `SELECT <policy expression>` for a table with a row-level policy, or `SELECT <check>` for a domain. */
  definition: string
  /** A domain: its checks run when a value is cast to it, not when it is read. */
  domain: boolean
  /** For a domain, the functions taking it, space-separated: calling one with a plain value casts the value to it. */
  carriers: string | null
}

/** An operator, cast or type that runs a volatile function without naming it (VOLATILE_ROUTES in queries.ts). */
interface RouteRow {
  kind: 'operator' | 'cast' | 'type'
  /** The operator's symbol, or the (target) type's name. */
  name: string
  function: string
  schema: string
  builtin: boolean
  /** Tables, views, functions and types through which values of the type concerned flow (types and implicit casts only), space-separated. */
  carriers: string | null
  /** Operators that take or return such values, space-separated. */
  carrier_operators: string | null
}

interface NameRow {
  builtin: string | null
  other: string | null
  operators: string | null
}

export interface CatalogSource {
  /** A client of the leader, or null while no leader answers. */
  connection(): postgres.Sql | null
  readonly readOnlyFunctions: readonly string[]
  readonly monitorInterval: number
  readonly connectTimeout: number
}

export class FunctionCatalog implements FunctionKnowledge {
  functions: ReadonlySet<string> = COMMON_FUNCTIONS
  leaderNames: ReadonlyMap<string, string> = new Map()
  operators: ReadonlySet<string> = COMMON_OPERATORS
  leaderOperators: ReadonlyMap<string, string> = new Map()
  /** Bumped whenever what the catalog says changes: classifications made before are stale. */
  version = 0
  loaded = false
  readonly #source: CatalogSource
  /** Lower-cased `name` and `schema.name` the user declared read-only. */
  readonly #declared: ReadonlySet<string>
  #builtinFunctions: ReadonlySet<string> = COMMON_FUNCTIONS
  #builtinOperators: ReadonlySet<string> = COMMON_OPERATORS
  #fingerprint: string | null = null
  #checking: Promise<void> | null = null
  /** A check asked for while one ran: it runs once that one ends (a full read if any asker wanted one). */
  #nextCheck: Promise<void> | null = null
  #reloadAgain = false
  #lastUnknownCheck = 0
  #lastFingerprintCheck = 0
  #timer: ReturnType<typeof setInterval> | null = null

  constructor(source: CatalogSource) {
    this.#source = source
    this.#declared = new Set((source.readOnlyFunctions ?? []).map((name) => name.toLowerCase()))
  }

  start(): void {
    this.#timer = setInterval(() => void this.check(), this.#source.monitorInterval * ROUNDS_PER_CHECK)
    unrefTimer(this.#timer)
    const first = setTimeout(() => void this.check(), 0)
    unrefTimer(first)
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = null
  }

  /** Waits for a check in progress (end() lets it finish before closing connections). */
  settled(): Promise<void> {
    return this.#checking ?? Promise.resolve()
  }

  /**
   * Reads the catalog again if it changed (`reload`: in any case). Never
   * rejects: without an answer the catalog keeps what it knew, and until
   * the first answer only the common built-ins count as known.
   */
  check(reload = false): Promise<void> {
    if (this.#checking) {
      // The check under way may have read the catalog before the change that asks for this one
      // (a DDL statement, refresh()): the caller waits for a check that starts after it, one for all such callers.
      this.#reloadAgain ||= reload
      this.#nextCheck ??= this.#checking.then(() => {
        const again = this.#reloadAgain
        this.#nextCheck = null
        this.#reloadAgain = false
        return this.#timer ? this.check(again) : undefined
      })
      return this.#nextCheck
    }
    this.#checking = this.#check(reload)
      .catch(() => {})
      .finally(() => {
        this.#checking = null
      })
    return this.#checking
  }

  /**
   * A statement called a name the catalog does not know: if a function was
   * created since, the fingerprint shows it. At most once a second, so a
   * stream of new texts with a name that is no function costs little.
   */
  unknownFunctionSeen(): void {
    const now = Date.now()
    if (now - this.#lastUnknownCheck < RECHECK_AT_MOST_EVERY) return
    this.#lastUnknownCheck = now
    void this.check()
  }

  /** A transaction committed, with statements the router did not see: compare the fingerprint, at most once a second. */
  mayHaveChanged(): void {
    const now = Date.now()
    if (now - this.#lastFingerprintCheck < RECHECK_AT_MOST_EVERY) return
    this.#lastFingerprintCheck = now
    void this.check()
  }

  /**
   * A statement that may change functions, views, operators or types is on
   * its way. Until the catalog has been read after it, only built-in
   * functions and operators count as known, so a call of any user function
   * or operator goes to the leader meanwhile.
   */
  changing(statement: PromiseLike<unknown>): void {
    if (this.functions !== this.#builtinFunctions || this.operators !== this.#builtinOperators) {
      this.functions = this.#builtinFunctions
      this.operators = this.#builtinOperators
      this.version++
    }
    const reload = () => void this.check(true)
    statement.then(reload, reload)
  }

  async #check(reload: boolean): Promise<void> {
    const connection = this.#source.connection()
    if (!connection || !this.#timer) return
    const timeout = this.#source.connectTimeout
    const [{ fingerprint }] = await withTimeout(connection.unsafe(CATALOG_FINGERPRINT), timeout, 'the leader (catalog)')
    if (!reload && fingerprint === this.#fingerprint) return
    const results = await withTimeout(connection.unsafe(CATALOG_CONTENTS), timeout, 'the leader (catalog)') as unknown as [
      [NameRow],
      VolatileRow[],
      DefinitionRow[],
      RouteRow[],
    ]
    if (!this.#timer) return // stopped meanwhile
    this.#apply(results[0][0], results[1], results[2], results[3])
    this.#fingerprint = fingerprint
  }

  #readOnly(row: { name: string; schema: string; builtin: boolean }): boolean {
    return (row.builtin && readOnlyBuiltin(row.name)) || this.#declared.has(row.name) || this.#declared.has(`${row.schema}.${row.name}`)
  }

  #apply(names: NameRow, volatile: VolatileRow[], definitions: DefinitionRow[], routes: RouteRow[]): void {
    const builtin = new Set((names.builtin ?? '').split(' '))
    const functions = new Set(builtin)
    for (const name of (names.other ?? '').split(' ')) functions.add(name)
    const operators = new Set(COMMON_OPERATORS)
    for (const symbol of (names.operators ?? '').split(' ')) operators.add(symbol)

    const leaderNames = new Map<string, string>()
    for (const row of volatile) {
      if (this.#readOnly(row)) continue
      leaderNames.set(row.name, `${row.name}() is volatile and may write, lock or change settings (declare it in readOnlyFunctions if it only reads)`)
    }
    const leaderOperators = new Map<string, string>()
    for (const row of routes) {
      if (this.#readOnly({ name: row.function, schema: row.schema, builtin: row.builtin })) continue
      const why = routeReason(row)
      if (row.kind === 'operator') leaderOperators.set(row.name, why)
      else leaderNames.set(row.name, why)
      for (const name of namesIn(row.carriers)) {
        if (!leaderNames.has(name)) leaderNames.set(name, `${name} holds or takes values of ${row.name}: ${why}`)
      }
      for (const symbol of namesIn(row.carrier_operators)) {
        if (!leaderOperators.has(symbol)) leaderOperators.set(symbol, `operator ${symbol} takes or returns values of ${row.name}: ${why}`)
      }
    }
    addDefinitions(definitions, { functions, leaderNames, operators, leaderOperators })

    const changed = !this.loaded || !sameSet(functions, this.functions) || !sameMap(leaderNames, this.leaderNames) ||
      !sameSet(operators, this.operators) || !sameMap(leaderOperators, this.leaderOperators)
    this.#builtinFunctions = builtin
    this.functions = functions
    this.leaderNames = leaderNames
    this.operators = operators
    this.leaderOperators = leaderOperators
    this.loaded = true
    if (changed) this.version++
  }
}

/** Why a statement that uses this operator, cast or type needs the leader. */
function routeReason(row: RouteRow): string {
  const calls = `${row.function}(), which is volatile and may write (declare it in readOnlyFunctions if it only reads)`
  if (row.kind === 'operator') return `operator ${row.name} calls ${calls}`
  if (row.kind === 'cast') return `a cast to ${row.name} calls ${calls}`
  return `reading or writing a value of type ${row.name} calls ${calls}`
}

/**
 * Views and tables whose reading, and domains whose casting, runs something
 * that needs the leader: their SQL, classified with what is known so far, is
 * a write (a volatile function, a cluster question such as pg_locks, or
 * another such view or domain). Repeated until nothing changes, as views nest.
 */
function addDefinitions(definitions: DefinitionRow[], known: FunctionKnowledge & { leaderNames: Map<string, string> }): void {
  const left = new Set(definitions)
  for (let grew = true; grew;) {
    grew = false
    for (const row of left) {
      const { kind, reason } = classifyStatement(row.definition, known)
      if (kind === 'read') continue
      const why = `${row.domain ? 'casting to' : 'reading'} ${row.name} needs the leader: ${reason}`
      known.leaderNames.set(row.name, why)
      for (const name of namesIn(row.carriers)) {
        if (!known.leaderNames.has(name)) known.leaderNames.set(name, `${name} takes values of ${row.name}: ${why}`)
      }
      left.delete(row)
      grew = true
    }
  }
}

/** The names in a space-separated list from the catalog (null: none). */
function namesIn(list: string | null): string[] {
  return list === null || list === '' ? [] : list.split(' ')
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false
  for (const item of a) if (!b.has(item)) return false
  return true
}

function sameMap(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false
  for (const [key, value] of a) if (b.get(key) !== value) return false
  return true
}
