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
 * from: any created, replaced, altered, renamed or dropped function, view
 * or policy changes a row count or the sum of the rows' xmin. Checked on a schedule;
 * the catalog is read again only when it changed.
 */
export const CATALOG_FINGERPRINT = `SELECT concat_ws('/',
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_proc),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_rewrite),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_policy),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_class WHERE relkind = 'v')) AS fingerprint`

/**
 * What the classifier needs from the catalog, in one round trip (three
 * statements, simple protocol): every function name (built-in: pg_catalog's
 * or an extension's; the rest are the users'), the volatile functions, and
 * the SQL that reading each user view or policy-protected table runs (as
 * text: pg_depend records no dependency on built-in functions).
 */
export const CATALOG_CONTENTS = `SELECT string_agg(DISTINCT lower(p.proname), ' ') FILTER (WHERE b.builtin) AS builtin,
       string_agg(DISTINCT lower(p.proname), ' ') FILTER (WHERE NOT b.builtin) AS other
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
SELECT lower(c.relname) AS name, pg_catalog.pg_get_viewdef(c.oid) AS definition
  FROM pg_catalog.pg_class c
 WHERE c.relkind = 'v' AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT lower(c.relname), 'SELECT ' || pg_catalog.pg_get_expr(p.polqual, p.polrelid)
  FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
 WHERE p.polqual IS NOT NULL`

/** A session's position after a statement on the leader: its insert LSN (at or past any commit it saw). */
export const LEADER_POSITION = 'select pg_current_wal_insert_lsn()::text as lsn'

/** A session's position after a read on a replica: what it had replayed (at least what the read saw). */
export const REPLICA_POSITION = 'select pg_last_wal_replay_lsn()::text as lsn'

/** Runs no row: on a lane after an error, its CommandComplete resets the connection's row counter (lib/tag/lanes.ts, `Lane.dirty`). */
export const CLEANSE = 'select 1 where false'

/** Statements pgfollow runs on the users' pools itself: the user's `debug` hook never sees them. */
export const INTERNAL_STATEMENTS: ReadonlySet<string> = new Set([LEADER_POSITION, REPLICA_POSITION, CATALOG_FINGERPRINT, CATALOG_CONTENTS, CLEANSE])
