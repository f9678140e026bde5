/**
 * The routing classifier: decides from the text alone whether a statement may
 * run on a replica. It is conservative by construction — only shapes known to
 * be read-only and node-independent are reads; anything unknown, ambiguous or
 * malformed is a write, because a write sent to the leader is merely slower
 * while a "read" sent to a replica can silently break locks or session state
 * (pg_advisory_lock and set_config succeed on a hot standby).
 *
 * One pass tokenizes the text (strings, quoted identifiers, dollar quotes and
 * comments are skipped, so keywords inside them never count); the rules then
 * walk the token list once. The caller caches results by text, so nothing is
 * cached here.
 */

export type StatementKind = 'read' | 'write'

export interface Classification {
  kind: StatementKind
  /** Short human text saying why, e.g. 'SELECT' or 'FOR UPDATE locks rows'. */
  reason: string
}

// ---------------------------------------------------------------------------
// Tables. Extend these, not the code below.

/** First words of queries that are reads unless a rule below finds otherwise. */
const QUERY_STATEMENTS = new Map<string, string>([
  ['select', 'SELECT'],
  ['with', 'WITH query'],
  ['values', 'VALUES'],
  ['table', 'TABLE'],
])

/** First words of statements that always go to the leader, with the reason. */
const WRITE_STATEMENTS = new Map<string, string>([
  ['insert', 'INSERT'],
  ['update', 'UPDATE'],
  ['delete', 'DELETE'],
  ['merge', 'MERGE'],
  ['copy', 'COPY'],
  ['do', 'DO runs arbitrary code'],
  ['call', 'CALL runs a procedure'],
  ['set', 'SET changes session state'],
  ['reset', 'RESET changes session state'],
  ['discard', 'DISCARD changes session state'],
  ['listen', 'LISTEN is session-bound'],
  ['unlisten', 'UNLISTEN is session-bound'],
  ['notify', 'NOTIFY'],
  ['begin', 'transaction control'],
  ['start', 'transaction control'],
  ['commit', 'transaction control'],
  ['end', 'transaction control'],
  ['rollback', 'transaction control'],
  ['abort', 'transaction control'],
  ['savepoint', 'transaction control'],
  ['release', 'transaction control'],
  ['prepare', 'PREPARE is session-bound'],
  ['execute', 'EXECUTE uses a session-bound prepared statement'],
  ['deallocate', 'DEALLOCATE is session-bound'],
  ['declare', 'cursors are session-bound'],
  ['fetch', 'cursors are session-bound'],
  ['move', 'cursors are session-bound'],
  ['close', 'cursors are session-bound'],
  ['lock', 'LOCK'],
  ['vacuum', 'VACUUM'],
  ['analyze', 'ANALYZE'],
  ['analyse', 'ANALYZE'],
  ['refresh', 'REFRESH MATERIALIZED VIEW'],
  ['cluster', 'CLUSTER'],
  ['reindex', 'REINDEX'],
  ['checkpoint', 'CHECKPOINT'],
  ['load', 'LOAD'],
  ['create', 'DDL (CREATE)'],
  ['alter', 'DDL (ALTER)'],
  ['drop', 'DDL (DROP)'],
  ['truncate', 'DDL (TRUNCATE)'],
  ['grant', 'DDL (GRANT)'],
  ['revoke', 'DDL (REVOKE)'],
  ['comment', 'DDL (COMMENT)'],
  ['security', 'DDL (SECURITY LABEL)'],
  ['import', 'DDL (IMPORT FOREIGN SCHEMA)'],
  ['reassign', 'DDL (REASSIGN OWNED)'],
])

/** The word after FOR that makes a locking clause; FOR ORDINALITY is not one. */
const LOCKING_CLAUSES = new Map<string, string>([
  ['update', 'FOR UPDATE locks rows'],
  ['share', 'FOR SHARE locks rows'],
  ['no', 'FOR NO KEY UPDATE locks rows'],
  ['key', 'FOR KEY SHARE locks rows'],
])

/** Statements that may only appear inside WITH in a query: a data-modifying CTE. */
const DATA_MODIFYING = new Set(['insert', 'update', 'delete', 'merge'])

/**
 * Functions that make an otherwise read-only query a leader statement: they
 * write, take locks or change state that lives in one session or one node, or
 * they fail on a standby with an error other than 25006, which the replica
 * fallback would not catch. Matched on the last part of the name, in any case,
 * quoted or not, whatever the schema — a user function of the same name goes
 * to the leader too, which is the safe side.
 */
const WRITE_FUNCTIONS = new Map<string, string>([
  ['nextval', 'nextval advances a sequence'],
  ['setval', 'setval changes a sequence'],
  ['currval', 'currval is session-bound'],
  ['lastval', 'lastval is session-bound'],
  ['set_config', 'set_config changes session state'],
  ['pg_notify', 'pg_notify sends a notification'],
  ['pg_listening_channels', 'LISTEN state is session-bound'],
  ['txid_current', 'assigns a transaction id'],
  ['txid_current_if_assigned', 'transaction ids are session-bound'],
  ['pg_current_xact_id', 'assigns a transaction id'],
  ['pg_current_xact_id_if_assigned', 'transaction ids are session-bound'],
  ['pg_export_snapshot', 'exported snapshots are session-bound'],
  ['pg_current_wal_lsn', 'fails on a standby'],
  ['pg_current_wal_insert_lsn', 'fails on a standby'],
  ['pg_current_wal_flush_lsn', 'fails on a standby'],
  ['pg_walfile_name', 'fails on a standby'],
  ['pg_walfile_name_offset', 'fails on a standby'],
  ['pg_switch_wal', 'fails on a standby'],
  ['pg_log_standby_snapshot', 'fails on a standby'],
  ['pg_cancel_backend', 'acts on the node that runs it'],
  ['pg_terminate_backend', 'acts on the node that runs it'],
  ['pg_log_backend_memory_contexts', 'acts on the node that runs it'],
  ['pg_reload_conf', 'server administration'],
  ['pg_rotate_logfile', 'server administration'],
  ['pg_promote', 'server administration'],
  ['pg_wal_replay_pause', 'server administration'],
  ['pg_wal_replay_resume', 'server administration'],
  ['pg_backup_start', 'server administration'],
  ['pg_backup_stop', 'server administration'],
  ['pg_start_backup', 'server administration'],
  ['pg_stop_backup', 'server administration'],
  ['pg_drop_replication_slot', 'replication slot administration'],
  ['pg_replication_slot_advance', 'replication slot administration'],
  ['pg_stat_statements_reset', 'resets statistics'],
])

/** Families of write functions, by prefix of the name. */
const WRITE_FUNCTION_PREFIXES: ReadonlyArray<readonly [string, string]> = [
  ['pg_advisory_', 'advisory locks live on one node'],
  ['pg_try_advisory_', 'advisory locks live on one node'],
  ['lo_', 'large-object function'],
  ['pg_create_', 'creates a slot or restore point'],
  ['pg_copy_', 'replication slot administration'],
  ['pg_logical_', 'logical decoding consumes or writes WAL'],
  ['pg_replication_origin_', 'replication origin administration'],
  ['pg_stat_reset', 'resets statistics'],
  ['dblink', 'dblink runs SQL elsewhere'],
]

/** Names a prefix above would catch that are plain reads. */
const READ_FUNCTIONS = new Set(['lo_get'])

/** What may follow EXPLAIN without ANALYZE and be planned without running. */
const EXPLAINABLE = new Set(['select', 'with', 'values', 'table', 'insert', 'update', 'delete', 'merge'])

/** Option values that turn EXPLAIN's ANALYZE off; any other value keeps it on. */
const FALSE_VALUES = new Set(['false', 'off', '0'])

// ---------------------------------------------------------------------------
// Tokenizer

// Token kinds as plain numbers, not an enum: type stripping (Node, Deno)
// has no enums, and numbers compare fastest.
const WORD = 0 // unquoted identifier or keyword, lower-cased
const QUOTED = 1 // "quoted identifier", lower-cased; never a keyword
const OPEN = 2
const CLOSE = 3
const SEMICOLON = 4
const DOT = 5
const COMMA = 6
const NUMBER = 7
const OTHER = 8 // strings, parameters, operators: opaque to the rules

interface Tokens {
  kinds: number[]
  /** Text of WORD, QUOTED and NUMBER tokens; '' for the others. */
  texts: string[]
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57
}

/** Letters, underscore and any non-ASCII character, as PostgreSQL's scanner. */
function isIdentStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128
}

/** Identifiers may contain digits and `$`: `a$1` is one word, not a parameter. */
function isIdentPart(c: number): boolean {
  return isIdentStart(c) || isDigit(c) || c === 36
}

/** Dollar-quote tags are identifiers without `$`. */
function isTagPart(c: number): boolean {
  return isIdentStart(c) || isDigit(c)
}

/**
 * Index just past the closing quote of a literal whose body starts at `i`,
 * or -1 when it never closes. A doubled quote is an escaped quote; in E''
 * strings a backslash escapes the next character too.
 */
function skipQuoted(sql: string, i: number, quote: number, backslash: boolean): number {
  const n = sql.length
  while (i < n) {
    const c = sql.charCodeAt(i)
    if (c === quote) {
      if (sql.charCodeAt(i + 1) !== quote) return i + 1
      i += 2
    } else if (backslash && c === 92) {
      i += 2
    } else {
      i++
    }
  }
  return -1
}

/** Tokens of `sql`, or null when a string, identifier or comment is unterminated. */
function tokenize(sql: string): Tokens | null {
  const kinds: number[] = []
  const texts: string[] = []
  const n = sql.length
  let i = 0
  while (i < n) {
    const c = sql.charCodeAt(i)
    const next = sql.charCodeAt(i + 1)
    if (c === 32 || (c >= 9 && c <= 13)) {
      i++
    } else if (c === 45 && next === 45) {
      // -- comment to the end of the line
      i += 2
      while (i < n && sql.charCodeAt(i) !== 10 && sql.charCodeAt(i) !== 13) i++
    } else if (c === 47 && next === 42) {
      // /* block comments */ nest in PostgreSQL, unlike the SQL standard
      let depth = 1
      i += 2
      while (i < n && depth > 0) {
        const d = sql.charCodeAt(i)
        const e = sql.charCodeAt(i + 1)
        if (d === 42 && e === 47) {
          depth--
          i += 2
        } else if (d === 47 && e === 42) {
          depth++
          i += 2
        } else {
          i++
        }
      }
      if (depth > 0) return null
    } else if (c === 39) {
      i = skipQuoted(sql, i + 1, 39, false)
      if (i < 0) return null
      kinds.push(OTHER)
      texts.push('')
    } else if (c === 34) {
      const start = i + 1
      i = skipQuoted(sql, start, 34, false)
      if (i < 0) return null
      kinds.push(QUOTED)
      texts.push(sql.slice(start, i - 1).toLowerCase())
    } else if ((c === 69 || c === 101) && next === 39) {
      // E'...' escape string: \' does not end it
      i = skipQuoted(sql, i + 2, 39, true)
      if (i < 0) return null
      kinds.push(OTHER)
      texts.push('')
    } else if (isIdentStart(c)) {
      const start = i
      let upper = c >= 65 && c <= 90
      for (i++; i < n; i++) {
        const d = sql.charCodeAt(i)
        if (!isIdentPart(d)) break
        if (d >= 65 && d <= 90) upper = true
      }
      // most SQL is written in one case; lower-case only the words that need it
      const word = sql.slice(start, i)
      kinds.push(WORD)
      texts.push(upper ? word.toLowerCase() : word)
    } else if (isDigit(c) || (c === 46 && isDigit(next))) {
      // Digits, dots, underscores and an exponent. Letters right after a number
      // start a new word, so `1for update` (accepted before PostgreSQL 15)
      // still shows its FOR.
      const start = i
      while (i < n && (isDigit(sql.charCodeAt(i)) || sql.charCodeAt(i) === 46 || sql.charCodeAt(i) === 95)) i++
      const e = sql.charCodeAt(i)
      if (e === 69 || e === 101) {
        let j = i + 1
        const sign = sql.charCodeAt(j)
        if (sign === 43 || sign === 45) j++
        if (isDigit(sql.charCodeAt(j))) {
          i = j
          while (i < n && isDigit(sql.charCodeAt(i))) i++
        }
      }
      kinds.push(NUMBER)
      texts.push(sql.slice(start, i))
    } else if (c === 36) {
      if (isDigit(next)) {
        // $1: a parameter placeholder, not a dollar quote
        i += 2
        while (i < n && isDigit(sql.charCodeAt(i))) i++
        kinds.push(OTHER)
        texts.push('')
        continue
      }
      let j = i + 1
      if (next !== 36) {
        while (j < n && isTagPart(sql.charCodeAt(j))) j++
        if (!isIdentStart(next) || sql.charCodeAt(j) !== 36) {
          // a lone `$`, or `$abc` without a closing `$`: no dollar quote; the server rejects it
          i++
          kinds.push(OTHER)
          texts.push('')
          continue
        }
      }
      const tag = sql.slice(i, j + 1)
      const close = sql.indexOf(tag, j + 1)
      if (close < 0) return null
      i = close + tag.length
      kinds.push(OTHER)
      texts.push('')
    } else {
      kinds.push(
        c === 40 ? OPEN : c === 41 ? CLOSE : c === 59 ? SEMICOLON : c === 46 ? DOT : c === 44 ? COMMA : OTHER,
      )
      texts.push('')
      i++
    }
  }
  return { kinds, texts }
}

// ---------------------------------------------------------------------------
// Rules

function read(reason: string): Classification {
  return { kind: 'read', reason }
}

function write(reason: string): Classification {
  return { kind: 'write', reason }
}

/** Why calling `name` needs the leader, or undefined when it does not. */
function writeFunctionReason(name: string): string | undefined {
  const exact = WRITE_FUNCTIONS.get(name)
  if (exact !== undefined) return exact
  if (READ_FUNCTIONS.has(name)) return undefined
  for (const [prefix, reason] of WRITE_FUNCTION_PREFIXES) {
    if (name.startsWith(prefix)) return reason
  }
  return undefined
}

/** Classifies the single statement in tokens [start, end). */
function classifyRange(t: Tokens, start: number, end: number): Classification {
  let i = start
  while (i < end && t.kinds[i] === OPEN) i++
  if (i === end || t.kinds[i] !== WORD) return write('unknown statement')
  const first = t.texts[i]
  const query = QUERY_STATEMENTS.get(first)
  if (query !== undefined) return scanQuery(t, i + 1, end, query)
  // only queries may be parenthesised; anything else in parentheses is not SQL we know
  if (i > start) return write('unknown statement')
  if (first === 'show') return read('SHOW')
  if (first === 'explain') return classifyExplain(t, i + 1, end)
  return write(WRITE_STATEMENTS.get(first) ?? 'unknown statement')
}

/**
 * A query is a read unless somewhere in it — subqueries and CTEs included —
 * it locks rows, creates a table, modifies data or calls a write function.
 */
function scanQuery(t: Tokens, from: number, end: number, reason: string): Classification {
  const { kinds, texts } = t
  for (let j = from; j < end; j++) {
    const kind = kinds[j]
    if (kind !== WORD && kind !== QUOTED) continue
    const word = texts[j]
    if (kinds[j + 1] === OPEN) {
      const why = writeFunctionReason(word)
      if (why !== undefined) return write(why)
    }
    if (kind !== WORD) continue
    if (word === 'for') {
      const lock = kinds[j + 1] === WORD ? LOCKING_CLAUSES.get(texts[j + 1]) : undefined
      if (lock !== undefined) return write(lock)
    } else if (word === 'into') {
      // INTO is reserved: in a query it can only be SELECT ... INTO new_table
      return write('SELECT INTO creates a table')
    } else if (DATA_MODIFYING.has(word)) {
      // `t.update` and `x as update` are names; anything else is (part of) a
      // data-modifying CTE, the only place these words are valid in a query
      const isName = kinds[j - 1] === DOT || kinds[j + 1] === DOT || (kinds[j - 1] === WORD && texts[j - 1] === 'as')
      if (!isName) return write('data-modifying CTE')
    }
  }
  return read(reason)
}

/**
 * EXPLAIN only plans its statement, but EXPLAIN ANALYZE runs it: then the
 * statement decides. Both option syntaxes count: `EXPLAIN ANALYZE VERBOSE s`
 * and `EXPLAIN (ANALYZE [value], ...) s`.
 */
function classifyExplain(t: Tokens, from: number, end: number): Classification {
  const { kinds, texts } = t
  let i = from
  let analyze = false
  const optionList = kinds[i] === OPEN && !(kinds[i + 1] === OPEN || QUERY_STATEMENTS.has(texts[i + 1]))
  if (optionList) {
    for (i++; i < end; i++) {
      if (kinds[i] === CLOSE) {
        i++
        break
      }
      const option = texts[i]
      if (kinds[i] === WORD && (option === 'analyze' || option === 'analyse') && (kinds[i - 1] === OPEN || kinds[i - 1] === COMMA)) {
        const value = kinds[i + 1] === WORD || kinds[i + 1] === NUMBER ? texts[i + 1] : ''
        analyze = !FALSE_VALUES.has(value)
      }
    }
  } else {
    for (; i < end && kinds[i] === WORD; i++) {
      const option = texts[i]
      if (option === 'analyze' || option === 'analyse') analyze = true
      else if (option !== 'verbose') break
    }
  }
  if (analyze) {
    const inner = classifyRange(t, i, end)
    return inner.kind === 'read' ? read('EXPLAIN ANALYZE of a read') : write(`EXPLAIN ANALYZE executes it: ${inner.reason}`)
  }
  let j = i
  while (j < end && kinds[j] === OPEN) j++
  if (j < end && kinds[j] === WORD && EXPLAINABLE.has(texts[j])) return read('EXPLAIN without ANALYZE')
  // EXPLAIN EXECUTE needs a prepared statement of this session; others are rare
  return write('EXPLAIN of a session-bound or unknown statement')
}

/**
 * Classifies one statement for routing: `read` may run on a replica, `write`
 * must run on the leader.
 *
 * `text` is the statement as sent, with parameters as `$1`, `$2`, ...
 * Reads are SELECT, WITH, VALUES, TABLE, SHOW and EXPLAIN (EXPLAIN ANALYZE only
 * of a read), except queries with FOR UPDATE/SHARE/NO KEY UPDATE/KEY SHARE,
 * SELECT ... INTO, a data-modifying CTE, or a call to a function that writes,
 * locks or depends on the session or node (nextval, setval, currval, lastval,
 * advisory locks, pg_notify, set_config, txid_current, pg_current_xact_id,
 * lo_* except lo_get, pg_current_wal_lsn, dblink, ...). Everything else is a
 * write, and so is anything this classifier does not understand: more than
 * one statement, an unterminated string or comment, an empty text.
 *
 * Only the text is seen: a user-defined function that writes, called from a
 * SELECT, classifies as a read (a replica then refuses it with SQLSTATE 25006
 * and the caller retries on the leader); pin such queries with `sql.leader`.
 * Assumes standard_conforming_strings = on (the default since 9.1).
 */
export function classifyStatement(text: string): Classification {
  const tokens = tokenize(text)
  if (tokens === null) return write('unterminated string, identifier or comment')
  const { kinds } = tokens
  let end = kinds.length
  // trailing semicolons end the one statement; anything after another one is a second statement
  while (end > 0 && kinds[end - 1] === SEMICOLON) end--
  if (end === 0) return write('empty statement')
  for (let i = 0; i < end; i++) {
    if (kinds[i] === SEMICOLON) return write('multiple statements')
  }
  return classifyRange(tokens, 0, end)
}
