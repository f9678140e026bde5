/**
 * The SQL the tag runs itself. It ships inside the library (an installed or
 * bundled copy reads no files), so it lives here rather than in sql/.
 */

/**
 * Where a node stands and whom it follows, asked of any node (leader or
 * replica) in one round trip; the monitor, `lagcheck` and `cluster.mjs
 * status` all read it, and lib/tag/follow.ts judges it.
 *
 * - On the leader the receive/replay columns are null; on a replica
 *   pg_current_wal_lsn() and pg_walfile_name() would fail, so they are only
 *   read when not in recovery.
 * - timeline: the leader's is the one it writes (in its WAL file names); a
 *   replica's is what its WAL receiver last received, else its last
 *   restartpoint's.
 * - The WAL receiver's details (status, sender, conninfo, slot) need
 *   superuser or pg_read_all_stats; any role sees whether it runs (pid). Its
 *   application_name is only trusted from a visible conninfo, where
 *   cluster_name is the fallback the receiver itself uses.
 * - senders (leader only): its WAL senders with their slots, so a replica is
 *   known to stream from this leader, not merely from someone.
 * - system_identifier and the control file reads cost a few microseconds.
 */
export const NODE_POSITION = `SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_last_xact_replay_timestamp() AS replay_timestamp,
       current_setting('port')::int AS port,
       nullif(current_setting('cluster_name'), '') AS cluster_name,
       (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier,
       CASE WHEN pg_is_in_recovery() THEN coalesce(w.received_tli, (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
       w.pid IS NOT NULL AS receiver_running,
       w.status AS receiver_status,
       w.sender_host,
       w.sender_port,
       coalesce(w.slot_name, nullif(current_setting('primary_slot_name'), '')) AS receiver_slot,
       CASE WHEN w.conninfo IS NULL THEN NULL
            ELSE coalesce(substring(w.conninfo FROM 'application_name=''?([^'' ]+)'), nullif(current_setting('cluster_name'), '')) END
         AS receiver_application_name,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE (SELECT coalesce(json_agg(json_build_object('name', r.application_name, 'state', r.state, 'slot', s.slot_name)), '[]')
                  FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid) END AS senders
FROM (SELECT 1) AS one
LEFT JOIN pg_stat_wal_receiver w ON true`

/** The leader's position alone: re-read when a replica's answer looked past the first one. */
export const LEADER_LSN = `SELECT pg_current_wal_lsn()::text AS lsn`

/**
 * A cheap fingerprint of what the function catalog (catalog.ts) is built
 * from: any created, replaced, altered, renamed or dropped function, view,
 * policy, operator, cast, base type or domain (or domain constraint) changes
 * a row count or the sum of the rows' xmin. Tables' row types and array
 * types are left out, so temporary tables do not make the catalog be read
 * again. Checked on a schedule; the catalog is read again only when it changed.
 */
export const CATALOG_FINGERPRINT = `SELECT concat_ws('/',
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_proc),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_rewrite),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_policy),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_class WHERE relkind = 'v'),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_operator),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_cast),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_type
    WHERE typtype = 'd' OR (typtype = 'b' AND typcategory <> 'A')),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_constraint WHERE contypid <> 0)) AS fingerprint`

/**
 * Volatile functions a statement runs without naming them, one row each:
 * - `operator`: an operator (`name` is its symbol) whose function is volatile;
 * - `cast`: a cast (`name` is the target type) whose function is volatile;
 * - `type`: a type whose input, output, receive or send function is volatile.
 * `function`, `schema` and `builtin` say which function, so a read-only one
 * (readOnlyFunctions, or a read-only built-in) can be let through. Values of
 * a type flow where its name never appears: a volatile type function runs
 * whenever a value of the type is read or parsed, an implicit cast wherever a
 * value of its user type (the target's, or the source's when the target is a
 * system type) is expected. For these, `carriers` names the tables, views,
 * functions and types (arrays, domains, composites and ranges built on it,
 * transitively) that hold, take or return such values, and
 * `carrier_operators` the operators that do (both space-separated: the
 * catalog's connection parses no arrays). No built-in operator, cast or
 * type of PostgreSQL 15 to 18 has a volatile function: these rows are the users'.
 */
const VOLATILE_ROUTES = `WITH RECURSIVE volatile_function AS (
  SELECT p.oid, lower(p.proname) AS name, lower(n.nspname) AS schema,
         n.nspname = 'pg_catalog' OR EXISTS (
           SELECT FROM pg_catalog.pg_depend d
            WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') AS builtin
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
   WHERE p.provolatile = 'v'),
route AS (
  SELECT 'operator' AS kind, o.oprname::text AS name, f.name AS function, f.schema, f.builtin, NULL::oid AS carrier
    FROM pg_catalog.pg_operator o JOIN volatile_function f ON f.oid = o.oprcode
  UNION ALL
  SELECT 'cast', lower(target.typname), f.name, f.schema, f.builtin,
         CASE WHEN c.castcontext <> 'i' THEN NULL
              WHEN target.typnamespace = 'pg_catalog'::regnamespace THEN c.castsource ELSE c.casttarget END
    FROM pg_catalog.pg_cast c JOIN volatile_function f ON f.oid = c.castfunc
    JOIN pg_catalog.pg_type target ON target.oid = c.casttarget
  UNION ALL
  SELECT DISTINCT 'type', lower(t.typname), f.name, f.schema, f.builtin, t.oid
    FROM pg_catalog.pg_type t
    CROSS JOIN LATERAL (VALUES (t.typinput), (t.typoutput), (t.typreceive), (t.typsend)) AS io(function)
    JOIN volatile_function f ON f.oid = io.function),
part_of(whole, part) AS (
  SELECT t.oid, coalesce(nullif(t.typelem, 0), t.typbasetype) FROM pg_catalog.pg_type t WHERE t.typelem <> 0 OR t.typbasetype <> 0
  UNION ALL
  SELECT c.reltype, a.atttypid FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
   WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT r.rngtypid, r.rngsubtype FROM pg_catalog.pg_range r),
carried(root, type) AS (
  SELECT DISTINCT carrier, carrier FROM route WHERE carrier IS NOT NULL
  UNION
  SELECT c.root, p.whole FROM carried c JOIN part_of p ON p.part = c.type)
SELECT r.kind, r.name, r.function, r.schema, r.builtin,
       (SELECT string_agg(DISTINCT carrier, ' ') FROM (
          SELECT lower(t.typname) FROM carried k JOIN pg_catalog.pg_type t ON t.oid = k.type WHERE k.root = r.carrier
          UNION ALL
          SELECT lower(c.relname) FROM carried k
            JOIN pg_catalog.pg_attribute a ON a.atttypid = k.type AND a.attnum > 0 AND NOT a.attisdropped
            JOIN pg_catalog.pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
           WHERE k.root = r.carrier
          UNION ALL
          SELECT lower(p.proname) FROM carried k JOIN pg_catalog.pg_proc p ON p.prorettype = k.type OR k.type = ANY (p.proargtypes::oid[])
           WHERE k.root = r.carrier) AS names(carrier)) AS carriers,
       (SELECT string_agg(DISTINCT o.oprname, ' ') FROM carried k
          JOIN pg_catalog.pg_operator o ON k.type IN (o.oprleft, o.oprright, o.oprresult) WHERE k.root = r.carrier) AS carrier_operators
  FROM route r`

/**
 * What the classifier needs from the catalog, in one round trip (four
 * statements, simple protocol):
 * 1. every function name (built-in: pg_catalog's or an extension's; the
 *    rest are the users') and every operator symbol;
 * 2. the volatile functions;
 * 3. the SQL that reading each user view or policy-protected table runs, and
 *    that casting to each user domain runs (its CHECK constraints), as text:
 *    pg_depend records no dependency on built-in functions;
 * 4. the other ways a statement calls a volatile function without naming it
 *    (see VOLATILE_ROUTES).
 */
export const CATALOG_CONTENTS = `SELECT string_agg(DISTINCT lower(p.proname), ' ') FILTER (WHERE b.builtin) AS builtin,
       string_agg(DISTINCT lower(p.proname), ' ') FILTER (WHERE NOT b.builtin) AS other,
       (SELECT string_agg(DISTINCT o.oprname, ' ') FROM pg_catalog.pg_operator o) AS operators
  FROM pg_catalog.pg_proc p
  CROSS JOIN LATERAL (SELECT p.pronamespace = 'pg_catalog'::regnamespace OR EXISTS (
    SELECT FROM pg_catalog.pg_depend d
     WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') AS builtin) b;
SELECT lower(p.proname) AS name, lower(n.nspname) AS schema,
       n.nspname = 'pg_catalog' OR EXISTS (
         SELECT FROM pg_catalog.pg_depend d
          WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') AS builtin
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE p.provolatile = 'v';
SELECT lower(c.relname) AS name, pg_catalog.pg_get_viewdef(c.oid) AS definition, false AS domain, NULL AS carriers
  FROM pg_catalog.pg_class c
 WHERE c.relkind = 'v' AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT lower(c.relname), 'SELECT ' || pg_catalog.pg_get_expr(p.polqual, p.polrelid), false, NULL
  FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
 WHERE p.polqual IS NOT NULL
UNION ALL
SELECT lower(t.typname), 'SELECT ' || pg_catalog.pg_get_expr(k.conbin, 0), true,
       (SELECT string_agg(DISTINCT lower(p.proname), ' ') FROM pg_catalog.pg_proc p WHERE t.oid = ANY (p.proargtypes::oid[]))
  FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_type t ON t.oid = k.contypid
 WHERE k.contype = 'c' AND t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace);
${VOLATILE_ROUTES}`

/** A session's position after a statement on the leader: its insert LSN (at or past any commit it saw). */
export const LEADER_POSITION = 'select pg_current_wal_insert_lsn()::text as lsn'

/** A session's position after a read on a replica: what it had replayed (at least what the read saw). */
export const REPLICA_POSITION = 'select pg_last_wal_replay_lsn()::text as lsn'

/** Runs no row: on a lane after an error, its CommandComplete resets the connection's row counter (lib/tag/lanes.ts, `Lane.dirty`). */
export const CLEANSE = 'select 1 where false'

/** Statements pgfollow runs on the users' pools itself: the user's `debug` hook never sees them. */
export const INTERNAL_STATEMENTS: ReadonlySet<string> = new Set([LEADER_POSITION, REPLICA_POSITION, CATALOG_FINGERPRINT, CATALOG_CONTENTS, CLEANSE])
