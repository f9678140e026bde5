-- The migration ledger: which files ran, with the checksum they had, so a
-- file changed after it was applied is refused instead of silently skipped.
CREATE TABLE IF NOT EXISTS pgfollow_migrations (
  name text PRIMARY KEY,
  checksum text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)
