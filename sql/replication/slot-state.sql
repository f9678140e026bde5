-- The state of the replicas' slots on the leader. A slot PostgreSQL has
-- invalidated (its replica was down past max_slot_wal_keep_size: wal_status
-- 'lost'; or, from 17 on, invalidation_reason is set, e.g. idle_timeout on
-- 18) no longer holds the WAL its replica needs: only a new clone brings the
-- replica back. invalidation_reason does not exist before 17, so it is read
-- through to_jsonb. $1: the slot names (text[]).
SELECT s.slot_name,
       s.active,
       s.wal_status,
       to_jsonb(s) ->> 'invalidation_reason' AS invalidation_reason
FROM pg_replication_slots s
WHERE s.slot_name = ANY($1::text[]);
