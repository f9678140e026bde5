#!/bin/sh
# Leader init script: the image's entrypoint runs it once, as postgres, when
# it initialises an empty data directory (a temporary server listens on the
# socket only). It creates the cluster's database, the replicator role and
# one physical slot per replica from the shared SQL in sql/replication, with
# psql variables.
#   POSTGRES_USER, POSTGRES_DB  set by the image's entrypoint
#   PGFOLLOW_DATABASE           the cluster's database (created here, not as
#                               POSTGRES_DB: see below)
#   PGFOLLOW_SQL_DIR            where sql/replication was uploaded
#   PGFOLLOW_SECRETS_DIR        holds replicator_password
#   PGFOLLOW_REPLICATOR         the replication role
#   PGFOLLOW_SLOTS              slot names, separated by spaces
set -eu

sql_dir=${PGFOLLOW_SQL_DIR:-/etc/pgfollow/sql}
secrets=${PGFOLLOW_SECRETS_DIR:-/run/pgfollow}
password_file="$secrets/replicator_password"
[ -r "$password_file" ] || { echo "pgfollow: cannot read $password_file" >&2; exit 1; }

# The image runs this on a temporary server started with the node's own
# flags. With `synchronous: any|first` those include synchronous_standby_names,
# and no standby can connect to that server (it has no TCP): a commit that
# waited for one would wait forever, and the leader would never start. These
# statements only need to be durable locally; the replicas copy them when
# they clone. (The image's own CREATE DATABASE for POSTGRES_DB would wait the
# same way; hence POSTGRES_DB=postgres, which it skips, and database.sql.)
PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c synchronous_commit=local"
export PGOPTIONS

run_sql() {
  psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" "$@"
}

# psql reads the password into the variable itself (\set with backquotes), so
# it never appears on a command line that ps could show.
run_sql -v replicator="${PGFOLLOW_REPLICATOR:-replicator}" \
  -c "\\set replicator_password \`cat '$password_file'\`" \
  -f "$sql_dir/replicator.sql"

if [ -n "${PGFOLLOW_DATABASE:-}" ]; then
  run_sql -v database="$PGFOLLOW_DATABASE" -f "$sql_dir/database.sql"
fi

for slot in ${PGFOLLOW_SLOTS:-}; do
  run_sql -v slot="$slot" -f "$sql_dir/slot.sql"
done
