-- The role replicas stream as. LOGIN REPLICATION and nothing more: it owns
-- nothing, is granted nothing, and pg_hba rejects it from every database.
-- psql variables: replicator (the role), replicator_password (a password or
-- a SCRAM-SHA-256 verifier, which keeps the plain text out of server logs).
CREATE ROLE :"replicator" WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'replicator_password';
