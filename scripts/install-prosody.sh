#!/usr/bin/env bash
# Installs Prosody (the XMPP server the XMPP bridge's end-to-end tests start) and prints the path of its binary.
# Uses apt-get when it is missing; needs root (or sudo) the first time. The tests run their own Prosody in the
# foreground with their own configuration, data directory and ports, never the system service.
# Prosody 0.12's own modules are what the bridge needs: mod_muc and mod_muc_mam for rooms and their archives, and
# mod_http_file_share for file uploads (XEP-0363), on a component such as
#     Component "upload.example.org" "http_file_share"
# (see docs/xmpp.md, "The XMPP server"). The tests also moderate rooms (XEP-0425), which needs mod_muc_moderation from
# Debian's prosody-modules: installed too when it is missing.
set -euo pipefail

find_prosody() {
    command -v prosody 2>/dev/null || { [[ -x /usr/bin/prosody ]] && echo /usr/bin/prosody; } || true
}

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
bin="$(find_prosody)"
if [[ -z "$bin" ]]; then
    echo "installing prosody with apt-get" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prosody >&2
    # The package starts a system-wide server on ports 5222 and 5269; the tests start their own.
    if command -v systemctl >/dev/null 2>&1; then $sudo systemctl disable --now prosody >&2 2>/dev/null || true; fi
    if command -v service >/dev/null 2>&1; then $sudo service prosody stop >&2 2>/dev/null || true; fi
    bin="$(find_prosody)"
fi
if [[ -z "$bin" ]]; then
    echo "prosody is not installed and could not be installed" >&2
    exit 1
fi
if [[ ! -e /usr/lib/prosody/modules/mod_muc_moderation/mod_muc_moderation.lua ]]; then
    echo "installing prosody-modules (mod_muc_moderation) with apt-get" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prosody-modules >&2
fi
echo "$bin"
