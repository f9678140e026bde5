/**
 * What the leader's catalog says about functions and views, for the
 * classifier: which names call a volatile function that is not known to be
 * read-only (such a statement goes to the leader, as pgpool-II does), which
 * user views or policy-protected tables call one when read, and which
 * function names exist at all (a call of any other name is of a function
 * created since the last look: the leader too).
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
import { classifyStatement, COMMON_FUNCTIONS, type FunctionKnowledge, readOnlyBuiltin } from './classify.ts'
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
  /** A view's query, or `SELECT <policy expression>` for a table with a row-level policy. */
  definition: string
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
  /** Bumped whenever what the catalog says changes: classifications made before are stale. */
  version = 0
  loaded = false
  readonly #source: CatalogSource
  /** Lower-cased `name` and `schema.name` the user declared read-only. */
  readonly #declared: ReadonlySet<string>
  #builtinFunctions: ReadonlySet<string> = COMMON_FUNCTIONS
  #fingerprint: string | null = null
  #checking: Promise<void> | null = null
  /** A full read asked for while a check ran: it runs once that one ends. */
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
      if (reload) this.#reloadAgain = true
      return this.#checking
    }
    this.#checking = this.#check(reload)
      .catch(() => {})
      .finally(() => {
        this.#checking = null
        if (this.#reloadAgain && this.#timer) {
          this.#reloadAgain = false
          void this.check(true)
        }
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
   * A statement that may change functions or views is on its way. Until the
   * catalog has been read after it, only built-in functions count as known,
   * so a call of any user function goes to the leader meanwhile.
   */
  changing(statement: PromiseLike<unknown>): void {
    if (this.functions !== this.#builtinFunctions) {
      this.functions = this.#builtinFunctions
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
      [{ builtin: string | null; other: string | null }],
      VolatileRow[],
      DefinitionRow[],
    ]
    if (!this.#timer) return // stopped meanwhile
    this.#apply(results[0][0], results[1], results[2])
    this.#fingerprint = fingerprint
  }

  #apply(names: { builtin: string | null; other: string | null }, volatile: VolatileRow[], definitions: DefinitionRow[]): void {
    const builtin = new Set((names.builtin ?? '').split(' '))
    const functions = new Set(builtin)
    for (const name of (names.other ?? '').split(' ')) functions.add(name)

    const leaderNames = new Map<string, string>()
    for (const row of volatile) {
      const readOnly = (row.builtin && readOnlyBuiltin(row.name)) || this.#declared.has(row.name) ||
        this.#declared.has(`${row.schema}.${row.name}`)
      if (readOnly) continue
      leaderNames.set(row.name, `${row.name}() is volatile and may write, lock or change settings (declare it in readOnlyFunctions if it only reads)`)
    }
    addRelations(definitions, { functions, leaderNames })

    const changed = !this.loaded || !sameSet(functions, this.functions) || !sameMap(leaderNames, this.leaderNames)
    this.#builtinFunctions = builtin
    this.functions = functions
    this.leaderNames = leaderNames
    this.loaded = true
    if (changed) this.version++
  }
}

/**
 * Views and tables whose reading runs something that needs the leader: their
 * SQL, classified with what is known so far, is a write (a volatile
 * function, a cluster question such as pg_locks, or another such view).
 * Repeated until nothing changes, as views nest.
 */
function addRelations(definitions: DefinitionRow[], known: { functions: ReadonlySet<string>; leaderNames: Map<string, string> }): void {
  const left = new Set(definitions)
  for (let grew = true; grew;) {
    grew = false
    for (const row of left) {
      const { kind, reason } = classifyStatement(row.definition, known)
      if (kind === 'read') continue
      known.leaderNames.set(row.name, `reading ${row.name} needs the leader: ${reason}`)
      left.delete(row)
      grew = true
    }
  }
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
