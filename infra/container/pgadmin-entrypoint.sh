#!/bin/sh
# Entrypoint of the pgAdmin container. The container starts as root for this
# script only: it copies the uploaded files (the login password, pgpass and
# servers.json) to a directory pgAdmin's user owns, mode 0600, then runs the
# image's own entrypoint as that user, as the image would have started it.
#
# Why: the Docker provider uploads files root-owned whatever `owner` says (its
# tar headers carry name, mode and size only), and pgAdmin runs as uid 5050,
# so it could not read a 0600 upload and its entrypoint would exit.
#
# Everything it touches comes from the environment, so the same file runs
# outside Docker (tests/infra-pgadmin.test.mjs runs it in a temp dir):
#   PGFOLLOW_SECRETS_IN   where the files were uploaded (root-owned)
#   PGFOLLOW_SECRETS_DIR  where pgAdmin reads them (a tmpfs in the container)
#   PGFOLLOW_PGADMIN_UID, PGFOLLOW_PGADMIN_GID   pgAdmin's user (5050, group 0)
set -eu

log() { printf 'pgfollow: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

secrets_in=${PGFOLLOW_SECRETS_IN:-/etc/pgfollow/pgadmin}
secrets=${PGFOLLOW_SECRETS_DIR:-/run/pgfollow}
uid=${PGFOLLOW_PGADMIN_UID:-5050}
gid=${PGFOLLOW_PGADMIN_GID:-0}
[ "$#" -gt 0 ] || set -- /entrypoint.sh

# Started unprivileged (docker run --user): nothing to hand over.
if [ "$(id -u)" != 0 ]; then
  log "not started as root: pgAdmin reads the files where they were uploaded"
  exec "$@"
fi

mkdir -p "$secrets"
# It may be a tmpfs mount point already: set owner and mode either way.
chown "$uid:$gid" "$secrets"
chmod 0700 "$secrets"
copied=0
for file in "$secrets_in"/*; do
  [ -f "$file" ] || continue
  target="$secrets/$(basename "$file")"
  cp "$file" "$target"
  chown "$uid:$gid" "$target"
  chmod 0600 "$target"
  copied=$((copied + 1))
done
[ "$copied" -gt 0 ] || die "nothing was uploaded to $secrets_in; pgAdmin would have no login password"

# pgAdmin's image runs as this user without a login shell; HOME as Docker sets it for that user.
home=$(getent passwd "$uid" 2> /dev/null | cut -d: -f6) || home=
export HOME="${home:-/var/lib/pgadmin}"

# Step down with whatever the image ships: su-exec (pgAdmin 9.15 and later),
# setpriv (util-linux), or the Python every pgAdmin image has.
if command -v su-exec > /dev/null 2>&1; then
  exec su-exec "$uid:$gid" "$@"
elif command -v setpriv > /dev/null 2>&1; then
  exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"
fi
for python in /venv/bin/python3 "$(command -v python3 || true)"; do
  if [ -n "$python" ] && [ -x "$python" ]; then
    # shellcheck disable=SC2016 # Python code, not shell
    exec "$python" -c 'import os, sys
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[1]))
os.execvp(sys.argv[3], sys.argv[3:])' "$uid" "$gid" "$@"
  fi
done
die "no su-exec, setpriv or python3 in this image to run pgAdmin as $uid"
