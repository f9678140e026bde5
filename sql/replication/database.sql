-- The cluster's database, created once, idempotently (CREATE DATABASE has no
-- IF NOT EXISTS). The Docker leader's init script runs this instead of the
-- image creating POSTGRES_DB: the image would commit on its temporary init
-- server, which waits for standbys when synchronous replication is on.
-- psql variables: database.
SELECT format('CREATE DATABASE %I', :'database')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
