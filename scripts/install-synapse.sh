#!/usr/bin/env bash
# Installs the pinned Synapse into a virtualenv for Trestle's tests and demo; prints the venv path.
#
#   TRESTLE_SYNAPSE_VENV  where the virtualenv lives (default: <repo>/.local/synapse-venv)
#
# Idempotent: does nothing if the venv already has the pinned version. Progress goes to stderr, so
# `venv=$(scripts/install-synapse.sh)` works.
set -euo pipefail

SYNAPSE_VERSION="1.163.2"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TRESTLE_SYNAPSE_VENV:-$repo_root/.local/synapse-venv}"

log() { echo "install-synapse: $*" >&2; }

# The version installed, if the extras are there too (authlib: single sign-on through an OAuth
# 2.0 / OpenID Connect provider, which the timeline's tests sign on with).
installed_version() {
    [[ -x "$venv/bin/python" ]] || return 0
    "$venv/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
import authlib  # noqa: F401
print(m.version("matrix-synapse"))
PY
}

if [[ "$(installed_version)" == "$SYNAPSE_VERSION" ]]; then
    log "matrix-synapse $SYNAPSE_VERSION already installed in $venv"
    echo "$venv"
    exit 0
fi

command -v python3 >/dev/null || { log "python3 is required"; exit 1; }

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating virtualenv $venv"
    mkdir -p "$(dirname "$venv")"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
        # Debian ships venv/ensurepip separately.
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
            log "python3 -m venv failed; installing python3-venv"
            rm -rf "$venv"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update >&2
            apt-get install -y python3-venv >&2
            python3 -m venv "$venv" >&2
        else
            log "python3 -m venv failed; install python3-venv (Debian/Ubuntu) and retry"
            exit 1
        fi
    fi
fi

log "installing matrix-synapse[oidc]==$SYNAPSE_VERSION into $venv (about 30 s)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "matrix-synapse[oidc]==$SYNAPSE_VERSION" >&2

got="$(installed_version)"
if [[ "$got" != "$SYNAPSE_VERSION" ]]; then
    log "expected matrix-synapse $SYNAPSE_VERSION in $venv, found '${got:-nothing}'"
    exit 1
fi
log "matrix-synapse $SYNAPSE_VERSION installed in $venv"
echo "$venv"
