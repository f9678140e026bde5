-- The leader's view of its replicas: one row per slot, with the walsender
-- (if one is connected). Lag in bytes is measured against the current WAL
-- insert position; replay_lag is null when the leader is idle, which is no lag.
SELECT s.slot_name,
       s.active,
       r.application_name,
       coalesce(r.state, 'stopped') AS state,
       pg_current_wal_lsn()::text AS leader_lsn,
       r.sent_lsn::text,
       r.flush_lsn::text,
       r.replay_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.sent_lsn)::bigint AS sent_lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn)::bigint AS flush_lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS replay_lag_bytes,
       -- A replica that replayed everything has no lag, whatever replay_lag last showed.
       CASE WHEN r.replay_lsn >= pg_current_wal_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM r.replay_lag) * 1000, 0) END::float8 AS replay_lag_ms,
       r.sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes
FROM pg_replication_slots s
LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_type = 'physical'
ORDER BY s.slot_name
