/**
 * The SQL the tag runs itself. It ships inside the library (an installed or
 * bundled copy reads no files), so it lives here rather than in sql/.
 */

/**
 * Where a node stands, asked of any node (leader or replica) in one round
 * trip. On the leader the receive/replay columns are null; on a replica
 * pg_current_wal_lsn() would fail, so it is only read when not in recovery.
 */
export const NODE_POSITION = `SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_last_xact_replay_timestamp() AS replay_timestamp,
       current_setting('port')::int AS port`
