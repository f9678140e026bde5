#!/bin/sh
# Docker health check of a pgfollow node. The leader is healthy when it
# accepts connections over TCP (during init the image runs a socket-only
# server, which pg_isready on the socket would already call ready). A replica
# is healthy only when it also streams from the leader: one that accepts
# connections but cannot stream (its slot was invalidated, the leader is
# unreachable) serves ever older data, and `pulumi up` must not call it done.
# It prints one line, which `docker inspect` shows under State.Health.
#   PGFOLLOW_ROLE          leader | replica
#   PGFOLLOW_PORT          the server's port in the container (default 5432)
#   PGFOLLOW_SECRETS_DIR   holds postgres_password (replicas log in with it)
#   PGFOLLOW_SUPERUSER     default postgres
set -eu

port=${PGFOLLOW_PORT:-5432}
user=${PGFOLLOW_SUPERUSER:-postgres}
if ! pg_isready -q -h 127.0.0.1 -p "$port" -U "$user" -d postgres -t 4; then
  echo "not accepting connections on 127.0.0.1:$port"
  exit 1
fi
if [ "${PGFOLLOW_ROLE:-leader}" != replica ]; then
  echo "accepting connections"
  exit 0
fi

password_file="${PGFOLLOW_SECRETS_DIR:-/run/pgfollow}/postgres_password"
if ! status=$(PGPASSWORD=$(cat "$password_file") PGCONNECT_TIMEOUT=4 psql -X -A -t -q -w \
  -h 127.0.0.1 -p "$port" -U "$user" -d postgres \
  -c "select coalesce((select status from pg_stat_wal_receiver), 'without a WAL receiver')" 2>&1); then
  echo "not streaming: cannot ask the replica: $status"
  exit 1
fi
if [ "$status" = streaming ]; then
  echo "streaming"
  exit 0
fi
echo "not streaming: the replica is $status (docker logs shows why)"
exit 1
