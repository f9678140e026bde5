/**
 * Each statement's kind (read or write), cached: per call site (a tagged
 * template's strings) and per text, and forgotten when the leader's catalog
 * changes. Names put into the text (`sql('name')`, builders) are rendered as
 * postgres.js renders them, fragments inlined, values left as placeholders:
 * all the classifier needs. A text a replica refused as read-only (25006)
 * is a write from then on, whatever sends it.
 */
import type postgres from 'postgres'
import type { FunctionCatalog } from './catalog.ts'
import { type Classification, classifyStatement, type StatementKind } from './classify.ts'
import type { PgQuery } from './postgres-internals.ts'

/** Texts cached at most; the cache starts over beyond (a program sends far fewer distinct statements). */
const MAX_CACHED_TEXTS = 5_000
const LEADER_ONLY: Classification = { kind: 'write', reason: 'a replica refused it as read-only (25006)' }

export class StatementKinds {
  readonly #catalog: FunctionCatalog
  /** postgres.js's Query class, to recognise fragments nested in a statement. */
  readonly #Query: new (...args: never[]) => PgQuery
  /** postgres.js's Identifier (`sql('name')`) and Builder (`sql(row)`, `sql(['a', 'b'])`): they put names into the text. */
  readonly #Identifier: new (...args: never[]) => { value: string }
  readonly #Builder: new (...args: never[]) => { build(before: string, parameters: unknown[], types: unknown[], options: unknown): unknown }
  /** Builders render with the pool's options (transforms). */
  readonly #pool: postgres.Sql
  /** The catalog version the caches below were filled under. */
  #catalogVersion = 0
  #kindByStrings = new WeakMap<object, Classification>()
  readonly #kindByText = new Map<string, Classification>()
  /** Statements a replica refused as read-only (25006): they go to the leader from now on. */
  readonly #leaderOnlyTexts = new Set<string>()

  constructor(catalog: FunctionCatalog, pool: postgres.Sql, Query: new (...args: never[]) => PgQuery) {
    this.#catalog = catalog
    this.#pool = pool
    this.#Query = Query
    this.#Identifier = Object.getPrototypeOf(pool('name')).constructor
    this.#Builder = Object.getPrototypeOf(pool({})).constructor
  }

  /**
   * read or write, cached per call site (template strings) or per text, and
   * forgotten when the catalog changes. A statement that may change
   * functions or views has the catalog read again once it has run.
   */
  kindOf(query: PgQuery): StatementKind {
    if (this.#catalog.version !== this.#catalogVersion) {
      this.#kindByStrings = new WeakMap()
      this.#kindByText.clear()
      this.#catalogVersion = this.#catalog.version
    }
    const classification = this.#classification(query)
    if (classification.changesCatalog) this.#catalog.changing(query)
    return classification.kind
  }

  #classification(query: PgQuery): Classification {
    if (!query.tagged || this.#hasFragment(query.args)) return this.#classifyText(this.statementText(query))
    let site = this.#kindByStrings.get(query.strings)
    if (site === undefined) {
      site = this.#classifyText(this.statementText(query, false))
      this.#kindByStrings.set(query.strings, site)
    }
    // Identifiers and builders put names into the text (`select ${sql('f')}(1)`): a read site is read again with them.
    // A write site stays a write: a name cannot take away what made it one.
    if (site.kind === 'write' || !this.#hasNames(query.args)) return site
    return this.#classifyText(this.statementText(query))
  }

  #classifyText(text: string): Classification {
    // Texts known to be leader-only are in #kindByText as writes too; the set only matters after the cache was cleared.
    let classification = this.#kindByText.get(text)
    if (classification === undefined) {
      classification = this.#leaderOnlyTexts.has(text) ? LEADER_ONLY : classifyStatement(text, this.#catalog)
      if (classification.unknownFunction !== undefined) this.#catalog.unknownFunctionSeen()
      if (this.#kindByText.size >= MAX_CACHED_TEXTS) this.#kindByText.clear()
      this.#kindByText.set(text, classification)
    }
    return classification
  }

  /**
   * The statement with fragments inlined, identifiers and builders rendered
   * as postgres.js renders them (`names: false`: as placeholders), and every
   * value as a placeholder: all the classifier needs.
   */
  statementText(query: PgQuery, names = true): string {
    if (!query.tagged) return query.strings[0]
    let text = query.strings[0]
    for (let i = 0; i < query.args.length; i++) text += this.#argumentText(query.args[i], text, names) + query.strings[i + 1]
    return text
  }

  #argumentText(arg: unknown, before: string, names: boolean): string {
    if (arg instanceof this.#Query) return this.statementText(arg, names)
    if (Array.isArray(arg) && arg[0] instanceof this.#Query) return arg.map((item) => this.#argumentText(item, before, names)).join(' ')
    if (!names) return '$1'
    if (arg instanceof this.#Identifier) return arg.value
    if (arg instanceof this.#Builder) {
      try {
        return String(arg.build(before, [], [], this.#pool.options))
      } catch {
        return '$1' // postgres.js refuses it too when the statement runs
      }
    }
    return '$1'
  }

  #hasNames(args: unknown[]): boolean {
    for (const arg of args) if (arg instanceof this.#Identifier || arg instanceof this.#Builder) return true
    return false
  }

  #hasFragment(args: unknown[]): boolean {
    for (const arg of args) if (this.#isFragment(arg)) return true
    return false
  }

  #isFragment(arg: unknown): boolean {
    return arg instanceof this.#Query || (Array.isArray(arg) && arg[0] instanceof this.#Query)
  }

  /** Whatever call site or helper sends this text again, it goes to the leader. */
  rememberLeaderOnly(query: PgQuery): void {
    const text = this.statementText(query)
    this.#leaderOnlyTexts.add(text)
    this.#kindByText.set(text, LEADER_ONLY)
    if (query.tagged && !this.#hasNames(query.args)) this.#kindByStrings.set(query.strings, LEADER_ONLY)
  }
}
