#!/usr/bin/env bash
# Installs ngircd (the IRC server the IRC bridge's end-to-end tests start; openssl too, for their TLS certificate) and
# prints the path of its binary.
# Uses apt-get when it is missing; needs root (or sudo) the first time.
set -euo pipefail

find_ngircd() {
    command -v ngircd 2>/dev/null || { [[ -x /usr/sbin/ngircd ]] && echo /usr/sbin/ngircd; } || true
}

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
# The TLS test makes a throw-away certificate with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
    echo "installing openssl with apt-get" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssl >&2
fi
bin="$(find_ngircd)"
if [[ -z "$bin" ]]; then
    echo "installing ngircd with apt-get" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ngircd >&2
    # The package starts a system-wide server on port 6667; the tests start their own.
    if command -v systemctl >/dev/null 2>&1; then $sudo systemctl disable --now ngircd >&2 2>/dev/null || true; fi
    if command -v service >/dev/null 2>&1; then $sudo service ngircd stop >&2 2>/dev/null || true; fi
    bin="$(find_ngircd)"
fi
if [[ -z "$bin" ]]; then
    echo "ngircd is not installed and could not be installed" >&2
    exit 1
fi
echo "$bin"
