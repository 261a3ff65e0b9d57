#!/usr/bin/env bash
# Times scripts/demo.sh as a newcomer meets it: from a clean clone (empty target/ and .local/,
# nothing built, no Synapse virtualenv) until the demo prints that it is running, once per cargo
# profile given (DEMO_PROFILE).
#
#   bench/demo-time.sh [PROFILE ...]     default: dev
#
# Prints, per profile: the wall time until "Trestle demo is running", the build's wall time and
# its CPU time (user + sys of cargo and every rustc, from bash's `time` in demo.sh), and the load
# average before and after (the machine may be busy: CPU time says more than wall time then).
#
# What is NOT cold, and why: the clone is of the committed HEAD of this repository; cargo's
# download cache (~/.cargo/registry) is reused, so crates are not downloaded again (downloading
# depends on the network, not on Trestle); pip's cache, if there is one, is reused for Synapse's
# wheels; the apt packages (ngircd, prosody) stay installed. The Rust toolchain and Python are
# assumed, as in the README. CARGO_TARGET_DIR and TRESTLE_SYNAPSE_VENV are unset for the run.
#
#   DEMO_TIME_DIR   where the clones go (default: a new directory under /tmp); each is deleted
#                   after its run unless DEMO_TIME_KEEP=1.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${DEMO_TIME_DIR:-$(mktemp -d /tmp/trestle-demo-time.XXXXXX)}"
mkdir -p "$work"
profiles=("$@")
((${#profiles[@]} > 0)) || profiles=(dev)

log() { echo "demo-time: $*" >&2; }

# shellcheck source=bench/demo-lib.sh
source "$repo_root/bench/demo-lib.sh"

results=()
for profile in "${profiles[@]}"; do
    clone="$work/trestle-$profile"
    rm -rf "$clone"
    git clone -q --no-local "$repo_root" "$clone"
    log "$profile: clean clone of $(git -C "$clone" rev-parse --short HEAD) in $clone"
    out="$work/demo-$profile.out"
    : >"$out"
    load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
    started=$(date +%s.%N)
    (
        cd "$clone"
        exec env -u CARGO_TARGET_DIR -u TRESTLE_SYNAPSE_VENV -u DEMO_TRESTLE_BIN \
            DEMO_PROFILE="$profile" DEMO_DIR="$clone/.demo" \
            DEMO_SYNAPSE_PORT="$(free_port)" DEMO_APPSERVICE_PORT="$(free_port)" DEMO_IRC_PORT="$(free_port)" \
            DEMO_XMPP_PORT="$(free_port)" DEMO_XMPP_COMPONENT_PORT="$(free_port)" \
            bash scripts/demo.sh
    ) >"$out" 2>&1 </dev/null &
    demo=$!
    wait_running "$demo" "$out" "demo-time: $profile" || exit 1
    ended=$(date +%s.%N)
    load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
    kill -TERM "$demo"
    wait "$demo" 2>/dev/null || true
    total="$(python3 -c 'import sys; print("%.0f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$started" "$ended")"
    built="$(grep -o 'built trestle in .*' "$out" | head -n 1)"
    [[ -n "$built" ]] || built="(no build line: see $out)"
    line="$profile: running after $total s; $built; load average before $load_before, after $load_after"
    log "$line"
    results+=("$line")
    if [[ "${DEMO_TIME_KEEP:-}" != 1 ]]; then rm -rf "$clone"; fi
done
echo "scripts/demo.sh from a clean clone, $(nproc) CPUs:"
printf '  %s\n' "${results[@]}"
