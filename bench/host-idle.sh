#!/usr/bin/env bash
# The host's memory at idle with every bundled plugin: starts scripts/demo.sh (Synapse, ngircd,
# Prosody and Trestle with the demo's configuration, which turns every plugin on) with a given
# trestle binary, leaves it alone, and reads the Trestle process's memory from /proc.
#
#   bench/host-idle.sh TRESTLE_BIN [SECONDS]     default: 30 s of idle before reading
#
# Build the binary the way it is shipped (`cargo build --release -p trestle-cli`): a debug build's
# memory says little. Prints RSS (anonymous and file-backed), the peak, the threads, and the
# demo's plugins. The demo runs in a new directory under /tmp on free ports, so a demo already
# running in .demo is not disturbed; Synapse's virtualenv is TRESTLE_SYNAPSE_VENV's if set.
# HOST_IDLE_AT_IDLE, if set, is a command run with Trestle's pid added when the figures are read
# (bench/link-order.sh dumps callgrind's counts with it); DEMO_TIMEOUT_S is passed to the demo.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(realpath "${1:?usage: bench/host-idle.sh TRESTLE_BIN [SECONDS]}")"
idle_s="${2:-30}"
work="$(mktemp -d /tmp/trestle-host-idle.XXXXXX)"
out="$work/demo.out"

log() { echo "host-idle: $*" >&2; }

# shellcheck source=bench/demo-lib.sh
source "$repo_root/bench/demo-lib.sh"

(
    cd "$repo_root"
    exec env DEMO_TRESTLE_BIN="$bin" DEMO_DIR="$work/demo" \
        DEMO_SYNAPSE_PORT="$(free_port)" DEMO_APPSERVICE_PORT="$(free_port)" DEMO_IRC_PORT="$(free_port)" \
        DEMO_XMPP_PORT="$(free_port)" DEMO_XMPP_COMPONENT_PORT="$(free_port)" \
        bash scripts/demo.sh
) >"$out" 2>&1 </dev/null &
demo=$!
# The demo is stopped however this script ends, and it stops what it started.
trap 'kill -TERM "$demo" 2>/dev/null; wait "$demo" 2>/dev/null || true' EXIT

wait_running "$demo" "$out" host-idle
# The file holds the pid and its start time (so a reused pid is not taken for it).
pid="$(cut -d" " -f1 "$work/demo/trestle.pid")"
log "demo running, Trestle is pid $pid; idle for $idle_s s"
sleep "$idle_s"

field() { awk -v k="$1:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
# Plugins are the keys under `plugins:` (two spaces in) with `enabled: true` below them.
plugins="$(awk '/^plugins:/ { on = 1; next } on && /^[^ #]/ { on = 0 }
    on && /^  [a-z-]+:/ { name = $1; sub(":", "", name) }
    on && /^    enabled: true/ { printf "%s%s", sep, name; sep = ", " }' "$work/demo/trestle.yaml")"
echo "Trestle host at idle ($idle_s s after the demo was ready), $(basename "$bin") $(sha256sum "$bin" | cut -c1-12):"
echo "  RSS $(field VmRSS) MB (anonymous $(field RssAnon) MB, file-backed $(field RssFile) MB), peak $(field VmHWM) MB"
echo "  PSS $(awk '$1 == "Pss:" { t += $2 } END { printf "%.1f", t / 1024 }' "/proc/$pid/smaps") MB; the mappings are in $work/smaps"
echo "  threads $(awk '$1 == "Threads:" { print $2 }' "/proc/$pid/status"):" \
    "$(cat /proc/"$pid"/task/*/comm | sort | uniq -c | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')"
cp "/proc/$pid/smaps" "$work/smaps"
if [[ -n "${HOST_IDLE_AT_IDLE:-}" ]]; then
    # shellcheck disable=SC2086 # the command is split at spaces, as bench's --at-idle is
    $HOST_IDLE_AT_IDLE "$pid" >/dev/null
fi
echo "  plugins in the demo's configuration: ${plugins:-see $work/demo/trestle.yaml}"
