-- Who a node is and whom it follows, asked of any node by lagcheck and
-- failover. A replica's primary_slot_name names its slot on the leader, which
-- joins it to the leader's view (replication-state.sql) even when it set no
-- cluster_name or application_name (the Docker replicas). sender_host/port
-- show which leader a replica streams from (null on a leader, or when its WAL
-- receiver is not running); they need superuser or pg_read_all_stats.
SELECT current_setting('cluster_name') AS cluster_name,
       current_setting('primary_slot_name') AS slot_name,
       current_setting('port')::int AS port,
       w.status AS receiver_status,
       w.sender_host,
       w.sender_port
FROM (SELECT 1) one
LEFT JOIN pg_stat_wal_receiver w ON true
