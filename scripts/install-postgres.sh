#!/usr/bin/env bash
# Installs a PostgreSQL server from the Debian packages for Trestle's tests; prints its bin dir
# (e.g. /usr/lib/postgresql/15/bin, holding initdb, pg_ctl and postgres).
#
# Idempotent: does nothing if a server is already installed under /usr/lib/postgresql/*/bin.
# Otherwise runs `apt-get update` and `apt-get install postgresql` (needs root). The tests start
# their own throwaway clusters (see tests/src/postgres.rs), so the install is told not to create
# Debian's default "main" cluster, and nothing is started. Progress goes to stderr, so
# `bin=$(scripts/install-postgres.sh)` works.
set -euo pipefail

log() { echo "install-postgres: $*" >&2; }

# The newest /usr/lib/postgresql/<version>/bin that has a complete server, or nothing.
server_bin_dir() {
    local dir best="" best_version=-1 version
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]] || continue
        version="$(basename "$(dirname "$dir")")"
        version="${version%%.*}"
        [[ "$version" =~ ^[0-9]+$ ]] || continue
        if ((version > best_version)); then
            best="$dir"
            best_version="$version"
        fi
    done
    echo "$best"
}

bin="$(server_bin_dir)"
if [[ -n "$bin" ]]; then
    log "PostgreSQL server already installed: $("$bin/postgres" --version)"
    echo "$bin"
    exit 0
fi

if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    log "no PostgreSQL server under /usr/lib/postgresql/*/bin; as root on Debian/Ubuntu, run"
    log "  apt-get install postgresql"
    log "(or run this script as root)"
    exit 1
fi

# Keep the packages from creating (and, where services run, starting) the default cluster: a
# drop-in read by /etc/postgresql-common/createcluster.conf, removed again afterwards so later
# installs by anyone else behave as usual.
dropin_dir=/etc/postgresql-common/createcluster.d
dropin="$dropin_dir/zz-trestle-install.conf"
cleanup() { rm -f "$dropin"; }
trap cleanup EXIT
mkdir -p "$dropin_dir"
echo "create_main_cluster = false" >"$dropin"

log "installing PostgreSQL from the Debian packages (about 30 s)"
export DEBIAN_FRONTEND=noninteractive
apt-get update >&2
apt-get install -y --no-install-recommends postgresql >&2

bin="$(server_bin_dir)"
if [[ -z "$bin" ]]; then
    log "apt-get installed postgresql, but no server (initdb, pg_ctl, postgres) is under /usr/lib/postgresql/*/bin"
    exit 1
fi
if ! getent passwd postgres >/dev/null; then
    log "the postgresql packages did not create the 'postgres' user the tests run the server as"
    exit 1
fi
log "installed $("$bin/postgres" --version)"
echo "$bin"
