#!/usr/bin/env bash
# Fetches `promtool` (Prometheus's rule checker, from Debian's prometheus package) into
# .local/promtool/ and prints its path. CI checks contrib/prometheus's alert rules with it.
#
# Only the package file is downloaded and unpacked (`apt-get download`, no install): the checker
# is one static binary, and installing the package would start a Prometheus server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "install-promtool: $*" >&2; }

if bin="$(command -v promtool)"; then
    echo "$bin"
    exit 0
fi
dir="$PWD/.local/promtool"
bin="$dir/usr/bin/promtool"
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$dir"
download() { (cd "$dir" && apt-get download prometheus >&2 2>/dev/null); }
if ! download; then
    # A fresh machine has no package lists yet.
    log "apt-get download failed; running apt-get update first"
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    download
fi
dpkg-deb -x "$dir"/prometheus_*.deb "$dir/unpacked"
mkdir -p "$dir/usr/bin"
mv "$dir/unpacked/usr/bin/promtool" "$bin"
rm -rf "$dir/unpacked" "$dir"/prometheus_*.deb
log "promtool: $("$bin" --version 2>&1 | head -1)"
echo "$bin"
