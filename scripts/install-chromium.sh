#!/usr/bin/env bash
# Installs headless Chromium from the Debian packages for the timeline plugin's browser test;
# prints the path of the browser binary.
#
# Idempotent: does nothing if `chromium` is already on PATH. Otherwise runs `apt-get update` and
# `apt-get install chromium` (needs root). The test drives the browser itself through the
# DevTools protocol (a websocket), so no WebDriver package is needed. Progress goes to stderr, so
# `bin=$(scripts/install-chromium.sh)` works.
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }

if bin="$(command -v chromium)"; then
    log "Chromium already installed: $("$bin" --version 2>/dev/null || echo "$bin")"
    echo "$bin"
    exit 0
fi

if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    log "chromium is not installed; as root on Debian/Ubuntu, run"
    log "  apt-get install chromium"
    log "(or run this script as root)"
    exit 1
fi

log "installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
bin="$(command -v chromium)"
log "installed: $("$bin" --version 2>/dev/null || echo "$bin")"
echo "$bin"
