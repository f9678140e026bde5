-- One physical slot per replica, created idempotently (a restart must not
-- fail on an existing slot). `true` reserves WAL at once, so nothing the
-- replica needs is recycled between its base backup and its first stream.
-- psql variables: slot.
SELECT pg_create_physical_replication_slot(:'slot', true)
WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = :'slot');
