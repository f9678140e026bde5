/**
 * The routing classifier: decides from the text alone whether a statement may
 * run on a replica. It is conservative by construction — only shapes known to
 * be read-only and node-independent are reads; anything unknown, ambiguous or
 * malformed is a write, because a write sent to the leader is merely slower
 * while a "read" sent to a replica can silently break locks or session state
 * (pg_advisory_lock and set_config succeed on a hot standby).
 *
 * One pass tokenizes the text (strings, quoted identifiers, dollar quotes and
 * comments are skipped, so keywords inside them never count; U&"..."
 * identifiers are decoded, so an escaped name is seen as the name it is); the
 * rules then walk the token list once. The caller caches results by text, so
 * nothing is cached here.
 *
 * What the text alone cannot tell — whether `f(x)` or a view writes — comes
 * from the server's catalog (see catalog.ts), passed in as FunctionKnowledge.
 */

export type StatementKind = 'read' | 'write'

export interface Classification {
  kind: StatementKind
  /** Short human text saying why, e.g. 'SELECT' or 'FOR UPDATE locks rows'. */
  reason: string
  /** A function (or `operator ###`) the knowledge passed in did not name: the catalog may be out of date. */
  unknownFunction?: string
  /** The statement may create, change or drop functions or views: the catalog is out of date after it. */
  changesCatalog?: boolean
}

/**
 * What the server's catalog says about names, for what the text cannot
 * show. Names are the last part of a (possibly qualified) name, lower-cased:
 * a name stands for every function or relation of that name in any schema.
 */
export interface FunctionKnowledge {
  /** Every function name the server has. A call of any other name is of a function created since: the leader. */
  readonly functions: ReadonlySet<string>
  /**
   * Names whose every mention sends a statement to the leader, with why:
   * volatile functions not known to be read-only (called, or in attribute
   * notation `t.f`), views or tables whose reading calls one, types whose
   * cast (`::t`, `cast(x as t)`, `t 'x'`), input or output runs one, and
   * the tables and functions through which values of such a type flow.
   */
  readonly leaderNames: ReadonlyMap<string, string>
  /** Every operator symbol the server has; a symbol not in it is of an operator created since: the leader. Unchecked when absent. */
  readonly operators?: ReadonlySet<string>
  /** Operator symbols whose use sends a statement to the leader (their function is volatile and not read-only), with why. */
  readonly leaderOperators?: ReadonlyMap<string, string>
}

// ---------------------------------------------------------------------------
// Tables. Extend these, not the code below.

/** A set of the words in `list` (long lists read better as text). */
function words(list: string): Set<string> {
  return new Set(list.trim().split(/\s+/))
}

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
  ['setseed', 'setseed changes session state'],
  ['lowrite', 'large-object function'],
  ['loread', 'large-object descriptors are session-bound'],
  ['brin_summarize_range', 'writes an index'],
  ['brin_summarize_new_values', 'writes an index'],
  ['brin_desummarize_range', 'writes an index'],
  ['gin_clean_pending_list', 'writes an index'],
  ['pg_import_system_collations', 'writes the catalog'],
  ['pg_restore_relation_stats', 'writes the catalog'],
  ['pg_restore_attribute_stats', 'writes the catalog'],
  ['pg_clear_relation_stats', 'writes the catalog'],
  ['pg_clear_attribute_stats', 'writes the catalog'],
  ['pg_nextoid', 'server administration'],
  ['pg_stop_making_pinned_objects', 'server administration'],
  ['cursor_to_xml', 'cursors are session-bound'],
  ['cursor_to_xmlschema', 'cursors are session-bound'],
  ['query_to_xml', 'runs SQL text the classifier cannot see'],
  ['query_to_xmlschema', 'runs SQL text the classifier cannot see'],
  ['query_to_xml_and_xmlschema', 'runs SQL text the classifier cannot see'],
  ['ts_stat', 'runs SQL text the classifier cannot see'],
  ['ts_rewrite', 'may run SQL text the classifier cannot see'],
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
  ['binary_upgrade_', 'server administration'],
]

/** Names a prefix above would catch that are plain reads. */
const READ_FUNCTIONS = new Set(['lo_get'])

/**
 * Questions about the cluster rather than about the node that answers: asked
 * of a replica they answer wrongly (pg_is_in_recovery() is true, locks and
 * replication held by the leader are invisible), so the leader answers them.
 * Functions, when called.
 */
const CLUSTER_QUESTION_FUNCTIONS = new Map<string, string>([
  ['pg_is_in_recovery', 'asks whether the cluster is in recovery: the leader answers'],
  ['pg_lock_status', 'locks that matter are held on the leader'],
  ['pg_blocking_pids', 'locks that matter are held on the leader'],
  ['pg_safe_snapshot_blocking_pids', 'locks that matter are held on the leader'],
  ['pg_prepared_xact', 'prepared transactions live on the leader'],
  ['pg_xact_status', 'the leader knows the newest transactions'],
  ['txid_status', 'the leader knows the newest transactions'],
  ['pg_xact_commit_timestamp', 'the leader knows the newest transactions'],
  ['pg_xact_commit_timestamp_origin', 'the leader knows the newest transactions'],
  ['pg_last_committed_xact', 'the leader knows the newest transactions'],
  ['pg_current_snapshot', "snapshots of the cluster are the leader's"],
  ['txid_current_snapshot', "snapshots of the cluster are the leader's"],
  ['pg_stat_get_activity', 'sessions that write run on the leader'],
  ['pg_stat_get_wal_senders', 'replication is seen from the leader'],
  ['pg_get_replication_slots', 'replication is seen from the leader'],
  ['pg_stat_get_replication_slot', 'replication is seen from the leader'],
  ['pg_stat_get_progress_info', 'maintenance runs on the leader'],
  ['pg_stat_get_subscription', 'subscriptions run on the leader'],
])

/** The same, as views: mentioned anywhere in a query. */
const CLUSTER_QUESTION_RELATIONS = new Map<string, string>([
  ['pg_stat_replication', 'replication is seen from the leader'],
  ['pg_replication_slots', 'replication is seen from the leader'],
  ['pg_stat_replication_slots', 'replication is seen from the leader'],
  ['pg_locks', 'locks that matter are held on the leader'],
  ['pg_stat_activity', 'sessions that write run on the leader'],
  ['pg_prepared_xacts', 'prepared transactions live on the leader'],
  ['pg_stat_subscription', 'subscriptions run on the leader'],
  ['pg_stat_subscription_stats', 'subscriptions run on the leader'],
])

/** Families of such views, by prefix. */
const CLUSTER_QUESTION_RELATION_PREFIXES: ReadonlyArray<readonly [string, string]> = [
  ['pg_stat_progress_', 'maintenance runs on the leader'],
]

/** Settings every replica reports differently from the leader (SHOW, current_setting('...')). */
const CLUSTER_SETTINGS = new Map<string, string>([
  ['transaction_read_only', 'transaction_read_only is on on every replica: the leader answers'],
  ['in_hot_standby', 'in_hot_standby is on on every replica: the leader answers'],
])

/**
 * Volatile built-in functions (pg_catalog, or a common extension's) that only
 * read, or only look at the node that answers: they stay on replicas. Every
 * other volatile function in the catalog sends its statement to the leader,
 * unless the user declares it read-only (`readOnlyFunctions`).
 */
const READ_ONLY_VOLATILE = words(`
  random random_normal array_sample array_shuffle gen_random_uuid uuidv4 uuidv7 clock_timestamp
  timeofday current_query pg_sleep pg_sleep_for pg_sleep_until bernoulli system pg_database_size
  pg_relation_size pg_table_size pg_indexes_size pg_total_relation_size pg_tablespace_size
  pg_read_file pg_read_binary_file pg_stat_file pg_stat_have_stats pg_stat_clear_snapshot
  pg_stat_force_next_flush pg_jit_available pg_collation_actual_version
  pg_database_collation_actual_version pg_partition_tree pg_partition_ancestors pg_hba_file_rules
  pg_ident_file_mappings pg_show_all_file_settings pg_current_logfile pg_sequence_last_value
  pg_notification_queue_usage pg_available_wal_summaries pg_wal_summary_contents
  pg_last_wal_receive_lsn pg_last_wal_replay_lsn pg_last_xact_replay_timestamp pg_is_wal_replay_paused
  pg_get_wal_replay_pause_state uuid_generate_v1 uuid_generate_v1mc uuid_generate_v4 gen_random_bytes
  gen_salt pg_stat_statements pg_stat_statements_info lo_get pgp_sym_encrypt pgp_sym_encrypt_bytea
  pgp_pub_encrypt pgp_pub_encrypt_bytea fips_mode
`)

/** Families of read-only volatile built-ins: node statistics, files, settings and memory of the node that answers. */
const READ_ONLY_VOLATILE_PREFIXES = ['pg_stat_get_', 'pg_ls_', 'pg_get_', 'pg_control_']

/**
 * Function names known before the catalog is loaded: the common built-ins,
 * none volatile. Until the catalog arrives (one round trip after connect), a
 * call of any other name sends its statement to the leader.
 */
export const COMMON_FUNCTIONS: ReadonlySet<string> = words(`
  count sum avg min max every bool_and bool_or array_agg string_agg json_agg jsonb_agg json_object_agg
  jsonb_object_agg stddev variance percentile_cont percentile_disc mode row_number rank dense_rank
  percent_rank cume_dist ntile lag lead first_value last_value nth_value now statement_timestamp
  transaction_timestamp date_trunc date_part date_bin age to_char to_date to_timestamp to_number
  make_date make_interval make_timestamp make_timestamptz justify_interval lower upper length
  char_length octet_length concat concat_ws format left right lpad rpad ltrim rtrim btrim replace
  split_part strpos starts_with initcap md5 sha256 encode decode quote_ident quote_literal
  quote_nullable regexp_replace regexp_match regexp_matches regexp_split_to_array
  regexp_split_to_table string_to_array array_to_string array_length array_position array_positions
  array_append array_prepend array_cat array_remove array_lower array_upper cardinality unnest
  generate_series generate_subscripts abs ceil ceiling floor round trunc mod power sqrt exp ln log
  sign div to_json to_jsonb row_to_json json_build_object jsonb_build_object json_build_array
  jsonb_build_array json_extract_path jsonb_extract_path json_extract_path_text
  jsonb_extract_path_text jsonb_set jsonb_insert jsonb_strip_nulls jsonb_pretty json_array_elements
  jsonb_array_elements json_array_elements_text jsonb_array_elements_text json_each jsonb_each
  json_each_text jsonb_each_text json_object_keys jsonb_object_keys json_typeof jsonb_typeof
  jsonb_array_length json_array_length jsonb_path_query jsonb_path_exists jsonb_path_match to_tsvector
  to_tsquery plainto_tsquery websearch_to_tsquery phraseto_tsquery ts_rank ts_rank_cd ts_headline
  current_setting current_database current_schema current_schemas version pg_backend_pid
  inet_server_port inet_server_addr inet_client_addr inet_client_port has_table_privilege
  has_schema_privilege pg_typeof pg_get_viewdef pg_get_functiondef pg_get_indexdef
  pg_get_constraintdef pg_get_expr pg_relation_size pg_total_relation_size pg_size_pretty
  pg_database_size obj_description col_description format_type to_regclass random gen_random_uuid
  clock_timestamp pg_sleep pg_last_wal_replay_lsn pg_last_wal_receive_lsn
  pg_last_xact_replay_timestamp pg_wal_lsn_diff numeric int4 int8 text float8 date timezone isfinite
  uuid bool
`)

/**
 * Operator symbols known before the catalog is loaded: every one of
 * pg_catalog's (PostgreSQL 18), none with a volatile function. Until the
 * catalog arrives, a statement with any other symbol goes to the leader.
 */
export const COMMON_OPERATORS: ReadonlySet<string> = words(`
  !! !~ !~* !~~ !~~* # ## #- #> #>> % & && &< &<| &> * *< *<= *<> *= *> *>= + - -> ->> -|- / < <-> << <<= <<|
  <= <> <@ <^ = > >= >> >>= >^ ? ?# ?& ?- ?-| ?| ?|| @ @-@ @> @? @@ @@@ ^ ^@ | |&> |/ |>> || ||/ ~ ~* ~<=~ ~<~ ~=
  ~>=~ ~>~ ~~ ~~*
`)

/**
 * Keywords that may stand before `(` without calling a function, and type
 * names with a modifier (`varchar(10)`): never a call of an unknown function.
 */
const NOT_CALLS = words(`
  in exists any all some array row values as over filter within group cast coalesce nullif greatest
  least extract overlay position substring trim treat normalize collation grouping rollup cube sets
  using on from join select where and or not when then else by lateral returning having with
  materialized repeatable only into distinct case between like ilike similar is window partition order
  rows range groups recursive union intersect except table set default limit offset fetch return
  operator char character varchar varying nchar national bit varbit numeric decimal dec float time
  timestamp interval precision zone localtime localtimestamp current_time current_timestamp xmlelement
  xmlforest xmlconcat xmlpi xmlroot xmlparse xmlserialize xmlexists xmlattributes xmltable
  xmlnamespaces json json_object json_array json_objectagg json_arrayagg json_scalar json_serialize
  json_query json_value json_exists json_table columns path nested passing merge_action
`)

/** Words after which an expression (and so a call) may follow; after any other name, `x(` is an alias's column list. */
const EXPRESSION_KEYWORDS = words(`
  select distinct all from join where and or not on when then else case by lateral returning having
  between like ilike to escape limit offset using only tablesample zone is in some any exists union
  intersect except values fetch first next collate similar table return
`)

/** Statements that may change functions, views or policies whatever follows (code runs, or a migration). */
const CATALOG_CHANGES = new Set(['do', 'call', 'import'])

/** CREATE/ALTER/DROP of these objects may change what the catalog says; of tables and indexes not (ALTER TABLE does, above). */
const CATALOG_OBJECTS = words('function procedure routine view policy extension rule aggregate schema operator cast language type domain')

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
const OTHER = 8 // E'' and dollar-quoted strings, parameters, other punctuation: opaque to the rules
const STRING = 9 // '...' and U&'...' strings, with their text (a setting's name is one)
const OPERATOR = 10 // an operator symbol as PostgreSQL's lexer cuts it: `=`, `->>`, `###`

interface Tokens {
  kinds: number[]
  /** Text of WORD, QUOTED, NUMBER, STRING and OPERATOR tokens; '' for the others. */
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

/** Characters of operator symbols: ~ ! @ # ^ & | ` ? + - * / % < > = */
function isOperatorChar(c: number): boolean {
  return c === 126 || c === 33 || c === 64 || c === 35 || c === 94 || c === 38 || c === 124 || c === 96 || c === 63 || c === 43 ||
    c === 45 || c === 42 || c === 47 || c === 37 || c === 60 || c === 62 || c === 61
}

/**
 * Index just past the operator symbol starting at `i`, cut as PostgreSQL's
 * lexer cuts it: a comment start (`--`, `/*`) ends it, and a symbol of more
 * than one character ends in `+` or `-` only if it also has one of
 * ~ ! @ # % ^ & | ` ? — so `a=-1` is `=` then `-`, and `@-` stays one symbol.
 */
function operatorEnd(sql: string, i: number): number {
  const start = i
  const n = sql.length
  for (i++; i < n; i++) {
    const d = sql.charCodeAt(i)
    if (!isOperatorChar(d)) break
    const e = sql.charCodeAt(i + 1)
    if ((d === 45 && e === 45) || (d === 47 && e === 42)) break
  }
  if (i - start < 2 || !isPlusOrMinus(sql.charCodeAt(i - 1))) return i
  for (let j = start; j < i - 1; j++) {
    const d = sql.charCodeAt(j)
    if (d === 126 || d === 33 || d === 64 || d === 35 || d === 94 || d === 38 || d === 124 || d === 96 || d === 63 || d === 37) return i
  }
  do i--
  while (i - start > 1 && isPlusOrMinus(sql.charCodeAt(i - 1)))
  return i
}

function isPlusOrMinus(c: number): boolean {
  return c === 43 || c === 45
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

/** The UESCAPE clause after a U&'' string or U&"" identifier; PostgreSQL refuses hex digits, +, quotes and spaces as the escape. */
const UESCAPE = /^\s*uescape\s*'([^0-9a-fA-F+'"\s])'/i

/**
 * A U& literal's text with its escapes decoded: `\XXXX` (UTF-16 code
 * units, so surrogate pairs combine), `\+XXXXXX`, and the escape doubled
 * for itself. null for a malformed escape: the server would refuse the text.
 */
function decodeUnicodeEscapes(body: string, escape: string): string | null {
  if (!body.includes(escape)) return body
  let out = ''
  let i = 0
  while (i < body.length) {
    const at = body.indexOf(escape, i)
    if (at < 0) {
      out += body.slice(i)
      break
    }
    out += body.slice(i, at)
    if (body[at + 1] === escape) {
      out += escape
      i = at + 2
      continue
    }
    const long = body[at + 1] === '+'
    const hex = long ? body.slice(at + 2, at + 8) : body.slice(at + 1, at + 5)
    if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== (long ? 6 : 4)) return null
    const code = parseInt(hex, 16)
    if (code > 0x10ffff) return null
    out += long ? String.fromCodePoint(code) : String.fromCharCode(code)
    i = at + (long ? 8 : 5)
  }
  return out
}

/** Tokens of `sql`, or null when a string, identifier or comment is unterminated, or an escape malformed. */
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
      const start = i + 1
      i = skipQuoted(sql, start, 39, false)
      if (i < 0) return null
      kinds.push(STRING)
      texts.push(sql.slice(start, i - 1))
    } else if ((c === 85 || c === 117) && next === 38 && (sql.charCodeAt(i + 2) === 34 || sql.charCodeAt(i + 2) === 39)) {
      // U&"d\0061t\+000061" / U&'...' [UESCAPE '!']: decoded, so an escaped name is the name it spells
      const quote = sql.charCodeAt(i + 2)
      const start = i + 3
      i = skipQuoted(sql, start, quote, false)
      if (i < 0) return null
      const body = sql.slice(start, i - 1)
      let escape = '\\'
      const clause = UESCAPE.exec(sql.slice(i, i + 64))
      if (clause !== null) {
        escape = clause[1]
        i += clause[0].length
      }
      const decoded = decodeUnicodeEscapes(quote === 34 ? body.replaceAll('""', '"') : body.replaceAll("''", "'"), escape)
      if (decoded === null) return null
      kinds.push(quote === 34 ? QUOTED : STRING)
      texts.push(quote === 34 ? decoded.toLowerCase() : decoded)
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
    } else if (isOperatorChar(c)) {
      const start = i
      i = operatorEnd(sql, i)
      const symbol = i - start === 1 ? String.fromCharCode(c) : sql.slice(start, i)
      // `=>` names an argument and is no operator; `!=` is PostgreSQL's spelling of `<>`
      kinds.push(symbol === '=>' ? OTHER : OPERATOR)
      texts.push(symbol === '!=' ? '<>' : symbol === '=>' ? '' : symbol)
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

/**
 * Whether a volatile built-in (pg_catalog's, or a common extension's) of this
 * name only reads or looks at the node that answers, and so may run on a replica.
 */
export function readOnlyBuiltin(name: string): boolean {
  if (writeFunctionReason(name) !== undefined || CLUSTER_QUESTION_FUNCTIONS.has(name)) return false
  if (READ_ONLY_VOLATILE.has(name)) return true
  for (const prefix of READ_ONLY_VOLATILE_PREFIXES) if (name.startsWith(prefix)) return true
  return false
}

/** Why the call `name(` at token j needs the leader: it writes, asks about the cluster, or the catalog says so. */
function callReason(t: Tokens, j: number, name: string, known: FunctionKnowledge | undefined): string | undefined {
  const why = writeFunctionReason(name) ?? CLUSTER_QUESTION_FUNCTIONS.get(name)
  if (why !== undefined) return why
  if (name === 'current_setting' && t.kinds[j + 2] === STRING) {
    const setting = CLUSTER_SETTINGS.get(t.texts[j + 2].toLowerCase())
    if (setting !== undefined) return setting
  }
  return known?.leaderNames.get(name)
}

/** Why a name mentioned without a call (a view, a function in attribute notation) needs the leader. */
function mentionReason(name: string, known: FunctionKnowledge | undefined): string | undefined {
  // System views all start with pg_: one comparison spares the lookups for every other name.
  if (name.charCodeAt(0) === 112 && name.startsWith('pg_')) {
    const why = CLUSTER_QUESTION_RELATIONS.get(name)
    if (why !== undefined) return why
    for (const [prefix, reason] of CLUSTER_QUESTION_RELATION_PREFIXES) if (name.startsWith(prefix)) return reason
  }
  return known !== undefined && known.leaderNames.size > 0 ? known.leaderNames.get(name) : undefined
}

/** Why reading the relation `name` asks about the cluster (pg_locks, pg_stat_replication, ...), else undefined. */
export function clusterQuestionRelation(name: string): string | undefined {
  return mentionReason(name, undefined)
}

/**
 * Whether `name(` at token j, a name the catalog does not know, calls a
 * function rather than being a keyword, a type with a modifier, or a column
 * list: `as t(a, b)`, `from t x(a)`, `f(x) g(a)`, `with c(a) as (...)`.
 */
function callsUnknown(t: Tokens, j: number, end: number): boolean {
  const { kinds, texts } = t
  if (kinds[j] === WORD && NOT_CALLS.has(texts[j])) return false
  const before = kinds[j - 1]
  if (before === CLOSE) return false
  if (before === QUOTED || (before === WORD && !EXPRESSION_KEYWORDS.has(texts[j - 1]))) return false
  let depth = 0
  let close = j + 1
  for (; close < end; close++) {
    if (kinds[close] === OPEN) depth++
    else if (kinds[close] === CLOSE && --depth === 0) break
  }
  const after = close + 2
  const cte = kinds[close + 1] === WORD && texts[close + 1] === 'as' &&
    (kinds[after] === OPEN || (kinds[after] === WORD && (texts[after] === 'materialized' || texts[after] === 'not')))
  return !cte
}

/** Classifies the single statement in tokens [start, end). */
function classifyRange(t: Tokens, start: number, end: number, known: FunctionKnowledge | undefined): Classification {
  let i = start
  while (i < end && t.kinds[i] === OPEN) i++
  if (i === end || t.kinds[i] !== WORD) return write('unknown statement')
  const first = t.texts[i]
  const query = QUERY_STATEMENTS.get(first)
  if (query !== undefined) return scanQuery(t, i + 1, end, query, known)
  // only queries may be parenthesised; anything else in parentheses is not SQL we know
  if (i > start) return write('unknown statement')
  if (first === 'show') {
    const setting = t.kinds[i + 1] === WORD || t.kinds[i + 1] === QUOTED ? CLUSTER_SETTINGS.get(t.texts[i + 1]) : undefined
    return setting === undefined ? read('SHOW') : write(setting)
  }
  if (first === 'explain') return classifyExplain(t, i + 1, end, known)
  const reason = WRITE_STATEMENTS.get(first) ?? 'unknown statement'
  return changesCatalog(t, i, end) ? { kind: 'write', reason, changesCatalog: true } : write(reason)
}

/**
 * Whether the statement starting at token i may change functions, views or
 * policies: `create or replace function`, `drop view`, `alter table` (which
 * renames views too), DO... A `create temp table` per request does not.
 */
function changesCatalog(t: Tokens, i: number, end: number): boolean {
  const first = t.texts[i]
  if (CATALOG_CHANGES.has(first)) return true
  if (first !== 'create' && first !== 'alter' && first !== 'drop') return false
  if (first === 'alter' && t.texts[i + 1] === 'table') return true
  for (let j = i + 1; j < end && j <= i + 6; j++) if (t.kinds[j] === WORD && CATALOG_OBJECTS.has(t.texts[j])) return true
  return false
}

/**
 * A query is a read unless somewhere in it — subqueries and CTEs included —
 * it locks rows, creates a table, modifies data, calls a write function or
 * asks about the cluster, or (with knowledge of the catalog) calls a
 * volatile function not known to be read-only — directly, through an
 * operator, a cast or a type's input or output — reads a view that does, or
 * calls a function or uses an operator the catalog does not know.
 */
function scanQuery(t: Tokens, from: number, end: number, reason: string, known: FunctionKnowledge | undefined): Classification {
  const { kinds, texts } = t
  let unknown: string | undefined
  for (let j = from; j < end; j++) {
    const kind = kinds[j]
    if (kind === OPERATOR) {
      if (known === undefined) continue
      const symbol = texts[j]
      const why = known.leaderOperators?.get(symbol)
      if (why !== undefined) return write(why)
      if (unknown === undefined && known.operators !== undefined && !known.operators.has(symbol)) unknown = `operator ${symbol}`
      continue
    }
    if (kind !== WORD && kind !== QUOTED) continue
    const word = texts[j]
    if (kinds[j + 1] === OPEN) {
      const why = callReason(t, j, word, known)
      if (why !== undefined) return write(why)
      if (known !== undefined && unknown === undefined && !known.functions.has(word) && callsUnknown(t, j, end)) unknown = word
    } else {
      const why = mentionReason(word, known)
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
  if (unknown !== undefined) {
    const what = unknown.startsWith('operator ') ? unknown : `${unknown}()`
    return { kind: 'write', reason: `calls ${what}, which the catalog does not know (yet)`, unknownFunction: unknown }
  }
  return read(reason)
}

/**
 * EXPLAIN only plans its statement, but EXPLAIN ANALYZE runs it: then the
 * statement decides. Both option syntaxes count: `EXPLAIN ANALYZE VERBOSE s`
 * and `EXPLAIN (ANALYZE [value], ...) s`.
 */
function classifyExplain(t: Tokens, from: number, end: number, known: FunctionKnowledge | undefined): Classification {
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
    const inner = classifyRange(t, i, end, known)
    if (inner.kind === 'read') return read('EXPLAIN ANALYZE of a read')
    return { ...inner, reason: `EXPLAIN ANALYZE executes it: ${inner.reason}` }
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
 * lo_* except lo_get, pg_current_wal_lsn, dblink, ...), and questions about
 * the cluster a replica answers wrongly (pg_is_in_recovery(), pg_locks,
 * pg_stat_replication, pg_stat_activity, SHOW transaction_read_only, ...).
 * Everything else is a write, and so is anything this classifier does not
 * understand: more than one statement, an unterminated string or comment, a
 * malformed U& escape, an empty text.
 *
 * With `known` (the server's catalog), a query that calls a volatile function
 * not known to be read-only, or mentions a view or table whose reading does,
 * uses an operator whose function is such, or names a type whose cast, input
 * or output function is, is a write; and so is one that calls a function or
 * uses an operator `known` does not name (`unknownFunction` says which). Without it only the text is seen: a
 * user-defined function that writes, called from a SELECT, classifies as a read.
 * Assumes standard_conforming_strings = on (the default since 9.1).
 */
export function classifyStatement(text: string, known?: FunctionKnowledge): Classification {
  const tokens = tokenize(text)
  if (tokens === null) return write('unterminated string, identifier or comment, or a malformed escape')
  const { kinds } = tokens
  let end = kinds.length
  // trailing semicolons end the one statement; anything after another one is a second statement
  while (end > 0 && kinds[end - 1] === SEMICOLON) end--
  if (end === 0) return write('empty statement')
  for (let i = 0; i < end; i++) {
    if (kinds[i] !== SEMICOLON) continue
    return anyChangesCatalog(tokens, end) ? { kind: 'write', reason: 'multiple statements', changesCatalog: true } : write('multiple statements')
  }
  return classifyRange(tokens, 0, end, known)
}

/** Whether any of several statements may change functions or views (a migration sent as one text). */
function anyChangesCatalog(t: Tokens, end: number): boolean {
  let start = true
  for (let i = 0; i < end; i++) {
    const kind = t.kinds[i]
    if (start && kind === WORD && changesCatalog(t, i, end)) return true
    if (kind !== OPEN) start = kind === SEMICOLON
  }
  return false
}
