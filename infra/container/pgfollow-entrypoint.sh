#!/bin/sh
# Entrypoint of every pgfollow node container, the leader and the replicas.
#
# As root (Docker's default) it hands the uploaded secrets to the postgres
# user and steps down to that user. Then a replica whose data directory has
# no PG_VERSION clones the leader. A replica that has one asks the leader
# about its slot first: when the leader invalidated the slot (the replica was
# down past max_slot_wal_keep_size) or the slot is gone, the WAL the replica
# needs is gone too, so it recreates the slot and clones again. The leader
# goes straight on. Last it execs its arguments: the image's own entrypoint
# with the server flags (default `docker-entrypoint.sh postgres`).
#
# Everything it touches comes from the environment, so the same file runs
# outside Docker (tests/infra-entrypoint.test.mjs runs it against a local
# leader and execs `postgres` directly):
#   PGDATA                     data directory (the image sets it)
#   PGFOLLOW_ROLE              leader | replica
#   PGFOLLOW_SECRETS_IN        where the secrets were uploaded (root-owned)
#   PGFOLLOW_SECRETS_DIR       where the postgres user reads them (copied there
#                              as root; started unprivileged, it reads SECRETS_IN)
#   PGFOLLOW_OS_USER           the unprivileged user to run as (postgres)
# replicas only:
#   PGFOLLOW_LEADER_HOST, PGFOLLOW_LEADER_PORT   the leader, over TCP
#   PGFOLLOW_SLOT              this replica's physical slot on the leader
#   PGFOLLOW_APPLICATION_NAME  this replica's name in pg_stat_replication
#   PGFOLLOW_REPLICATOR        the replication role
#   PGFOLLOW_WAIT_SECONDS      how long to wait for the leader before a clone
#                              (default 300)
#   PGFOLLOW_CHECK_SECONDS     how long a restart waits for the leader to check
#                              its slot (default 30; then it starts as it is)
set -eu

log() { printf 'pgfollow: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

: "${PGDATA:?PGDATA must name the data directory}"
role=${PGFOLLOW_ROLE:-leader}
secrets_in=${PGFOLLOW_SECRETS_IN:-/etc/pgfollow/secrets}
secrets=${PGFOLLOW_SECRETS_DIR:-/run/pgfollow}
os_user=${PGFOLLOW_OS_USER:-postgres}
[ "$#" -gt 0 ] || set -- docker-entrypoint.sh postgres

case "$role" in
  leader | replica) ;;
  *) die "PGFOLLOW_ROLE is \"$role\": use leader or replica" ;;
esac

# Run as someone else, with whatever the image ships: gosu (Debian images),
# su-exec (Alpine images) or setpriv (util-linux).
step_down() {
  if command -v gosu > /dev/null 2>&1; then
    exec gosu "$os_user" "$@"
  elif command -v su-exec > /dev/null 2>&1; then
    exec su-exec "$os_user" "$@"
  else
    exec setpriv --reuid="$os_user" --regid="$(id -g "$os_user")" --init-groups "$@"
  fi
}

if [ "$(id -u)" = 0 ]; then
  uid=$(id -u "$os_user") || die "no user $os_user in this image"
  gid=$(id -g "$os_user")
  # Uploads land owned by root. libpq and the image's entrypoint read them as
  # postgres, and libpq ignores a password file others can read: copy each one
  # to a directory only postgres can enter, mode 0600.
  mkdir -p "$secrets"
  # It may be a tmpfs mount point already: set owner and mode either way.
  chown "$uid:$gid" "$secrets"
  chmod 0700 "$secrets"
  for secret in "$secrets_in"/*; do
    [ -f "$secret" ] || continue
    install -o "$uid" -g "$gid" -m 0600 "$secret" "$secrets/"
  done
  # The image's entrypoint would fix ownership as root; it runs as postgres
  # here, so do it now. The parent must be writable too: a replica clones
  # next to PGDATA and renames the finished copy into place.
  mkdir -p "$PGDATA"
  chown "$uid:$gid" "$(dirname "$PGDATA")"
  find "$PGDATA" \! -user "$uid" -exec chown "$uid:$gid" '{}' +
  step_down "$0" "$@"
fi

# Started unprivileged (docker run --user, or a test): nobody copied the
# secrets, so read them where they were uploaded.
[ -d "$secrets" ] || secrets=$secrets_in

replica_settings() {
  leader_host=${PGFOLLOW_LEADER_HOST:?PGFOLLOW_LEADER_HOST must name the leader}
  leader_port=${PGFOLLOW_LEADER_PORT:-5432}
  slot=${PGFOLLOW_SLOT:?PGFOLLOW_SLOT must name the slot of this replica}
  application_name=${PGFOLLOW_APPLICATION_NAME:?PGFOLLOW_APPLICATION_NAME must name this replica}
  replicator=${PGFOLLOW_REPLICATOR:-replicator}
  password_file="$secrets/replicator_password"
  [ -r "$password_file" ] || die "cannot read $password_file"
  conninfo="host=$leader_host port=$leader_port user=$replicator replication=true application_name=$application_name"
}

# A replication command on the leader (the only kind the replicator may send).
replication_command() {
  PGPASSWORD=$(cat "$password_file") psql -X -A -t -q -w -d "$conninfo" -c "$1"
}

# Waits up to $1 seconds for the leader's TCP port; fails when it stays shut.
wait_for_leader() {
  deadline=$(($(date +%s) + $1))
  # TCP, not the socket: the leader's socket answers during its init, its
  # TCP port only once the init scripts ran (the replicator role exists).
  until pg_isready -q -h "$leader_host" -p "$leader_port" -t 3; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# What the leader says of this replica's slot: ok, missing, or invalidated.
# READ_REPLICATION_SLOT (PostgreSQL 15+) shows a slot without restart_lsn
# once PostgreSQL removed the WAL it held (wal_status 'lost',
# max_slot_wal_keep_size); every pgfollow slot reserves WAL when it is
# created, so only that makes it lose its restart_lsn. A slot that 18
# invalidated for idle_replication_slot_timeout keeps its restart_lsn, but
# the leader refuses to stream from it: ask to stream from a point no server
# has reached. For a usable slot the leader refuses the position ("ahead of
# the WAL flush position") without sending WAL or moving the slot; for an
# invalidated one it answers "can no longer access replication slot". psql
# cannot stream, so it gives up either way. Prints nothing when it cannot ask.
slot_state() {
  row=$(replication_command "READ_REPLICATION_SLOT $slot") || return 0
  case "$row" in
    physical\|\|*) echo invalidated ;;
    physical\|*)
      answer=$(replication_command "START_REPLICATION SLOT $slot PHYSICAL FFFFFFFF/FFFFFFFF" 2>&1) || true
      case "$answer" in
        *"can no longer access replication slot"*) echo invalidated ;;
        *) echo ok ;;
      esac
      ;;
    *) echo missing ;;
  esac
}

clone_leader() {
  if [ -d "$PGDATA" ] && [ ! -s "$PGDATA/PG_VERSION" ] && [ -n "$(ls -A "$PGDATA")" ]; then
    die "$PGDATA has files but no PG_VERSION; not cloning over them (empty it to clone again)"
  fi

  if ! wait_for_leader "${PGFOLLOW_WAIT_SECONDS:-300}"; then
    die "the leader $leader_host:$leader_port did not accept connections within ${PGFOLLOW_WAIT_SECONDS:-300}s; nothing was cloned"
  fi
  PGPASSWORD=$(cat "$password_file")
  export PGPASSWORD

  # The leader's init script creates the slot; a replica added later creates
  # its own, reserving WAL at once as the init script does. A slot left from
  # an earlier replica of this name may have been invalidated; a clone cannot
  # stream from it, so it is dropped and created afresh.
  state=$(slot_state)
  if [ "$state" = invalidated ]; then
    log "the leader invalidated slot $slot (the WAL it held is gone); dropping it"
    replication_command "DROP_REPLICATION_SLOT $slot" > /dev/null
    state=missing
  fi
  case "$state" in
    missing) replication_command "CREATE_REPLICATION_SLOT $slot PHYSICAL (RESERVE_WAL)" > /dev/null ;;
    ok) ;;
    # A leader before 15 has no READ_REPLICATION_SLOT: create it unless it is there.
    *) pg_receivewal -h "$leader_host" -p "$leader_port" -U "$replicator" -w --slot="$slot" --create-slot --if-not-exists ;;
  esac

  # Clone beside PGDATA and rename when complete, so a clone cut short (a
  # killed container) never leaves a PG_VERSION that would skip cloning.
  clone="$PGDATA.pgfollow-clone"
  rm -rf "$clone"
  log "cloning the leader $leader_host:$leader_port into $PGDATA (slot $slot)"
  # -R writes standby.signal, primary_conninfo (with application_name) and
  # primary_slot_name; -c fast does not wait for a spread checkpoint.
  pg_basebackup -w -D "$clone" -R -X stream -S "$slot" -c fast \
    -d "host=$leader_host port=$leader_port user=$replicator application_name=$application_name"
  unset PGPASSWORD
  # Only now is an old copy (one that could no longer stream) removed.
  if [ -d "$PGDATA" ]; then rm -rf "$PGDATA"; fi
  mv "$clone" "$PGDATA"
  log "cloned; starting as a hot standby named $application_name"
}

if [ "$role" = replica ]; then
  replica_settings
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    clone_leader
  elif ! wait_for_leader "${PGFOLLOW_CHECK_SECONDS:-30}"; then
    log "$PGDATA holds a data directory; the leader does not answer, so starting it as it is"
  else
    state=$(slot_state)
    case "$state" in
      invalidated | missing)
        log "slot $slot on the leader is $state: the WAL this replica needs is gone; cloning the leader again"
        clone_leader
        ;;
      *) log "$PGDATA holds a data directory; starting it without cloning" ;;
    esac
  fi
fi

exec "$@"
