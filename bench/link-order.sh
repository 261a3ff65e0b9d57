#!/usr/bin/env bash
# Writes link/startup.order: the functions an appservice runs to start and then to idle, first,
# and then those it runs to echo, in the order the linker is to place them (see link/order.rs,
# and docs/benchmarks.md, "Idle memory: start-up code placed together"). Two appservices are
# profiled: bench-echo in the benchmark, and the `trestle` host in the demo, every plugin on.
#
#   bench/link-order.sh
#
# Why: the kernel maps 64 kB of the binary around every page start-up touches, and start-up
# touches code all over it, so most of the binary's code stayed resident at idle. Placed
# together, it is a few hundred pages.
#
# How: bench-echo runs under callgrind in the benchmark (a mock homeserver, so start-up takes the
# path it takes for real), on every CPU and pinned to one (each runtime's start-up); `--at-idle` dumps callgrind's counts when the idle RSS is taken, and the
# end of the run dumps those of the echoes. The host runs under callgrind in bench/host-idle.sh
# (Synapse, ngircd, Prosody: the demo's needs), dumped the same way 20 s after the demo is ready.
# Every function with a cost in a dump is named, in the order callgrind first names it: start-up's
# first, then the echoes'. Only the symbols the binaries define are kept.
#
# The names are Rust's mangled ones. They stay the same while a crate's version, features and
# build script, and the compiler, do not change, so the file ages slowly: a function it misses is
# placed as before. Run it again after updating dependencies or the toolchain. Needs valgrind.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
command -v valgrind >/dev/null || { echo "link-order: needs valgrind (apt-get install valgrind)" >&2; exit 1; }

# One package at a time, as each is built for use: built together, their dependencies' features
# are unified, which changes the crates' hashes and so the names.
cargo build --release --locked -p trestle-bench
cargo build --release --locked -p trestle-cli
work="$(mktemp -d /tmp/trestle-link-order.XXXXXX)"
trap 'rm -rf "$work"' EXIT

target/release/bench --apps trestle --scenarios echo,echo1 --runs 1 --echo-events 1000 --echo1-events 300 \
    --warmup 0 --settle-ms 20000 --stall-s 300 \
    --wrap "valgrind --tool=callgrind --demangle=no --callgrind-out-file=$work/cg.%p" \
    --at-idle "callgrind_control -d" >"$work/bench.out"
# Pinned to one CPU too, where the runtime is the current-thread one (trestle::runtime::build).
target/release/bench --apps trestle --scenarios echo --runs 1 --echo-events 1000 --pin \
    --warmup 0 --settle-ms 20000 --stall-s 300 \
    --wrap "valgrind --tool=callgrind --demangle=no --callgrind-out-file=$work/cg.%p" \
    --at-idle "callgrind_control -d" >>"$work/bench.out"

# The host: the demo runs a wrapper that runs trestle under callgrind; its steps get 15 minutes.
printf '#!/bin/sh\nexec valgrind --tool=callgrind --demangle=no --callgrind-out-file=%s/host.%%p %s "$@"\n' \
    "$work" "$repo_root/target/release/trestle" >"$work/trestle"
chmod +x "$work/trestle"
HOST_IDLE_AT_IDLE="callgrind_control -d" DEMO_TIMEOUT_S=900 bash bench/host-idle.sh "$work/trestle" 20 >"$work/host.out"

# Function names in the order a callgrind file first gives them ("fn=(id) name" or "cfn=(id)
# name"; later mentions carry the id alone), callgrind's recursion suffix ('2) dropped.
names() {
    sed -nE "s/^c?fn=\([0-9]+\) (.*)$/\1/p" "$@" | sed -E "s/'[0-9]+$//" | awk '!seen[$0]++'
}

nm --defined-only target/release/bench-echo target/release/trestle 2>/dev/null |
    awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/defined"
shopt -s nullglob
startup=("$work"/cg.*.1 "$work"/host.*.1)
echoes=()
for f in "$work"/cg.*; do [[ "$f" == *.1 ]] || echoes+=("$f"); done
if [[ -z "$(echo "$work"/cg.*.1)" || -z "$(echo "$work"/host.*.1)" ]]; then
    echo "link-order: a start-up dump is missing in $work:" >&2
    cat "$work/bench.out" "$work/host.out" >&2
    exit 1
fi

mkdir -p link
{ names "${startup[@]}"; names "${echoes[@]}"; } | awk '!seen[$0]++' |
    awk 'NR == FNR { defined[$0] = 1; next } $0 in defined' "$work/defined" - >link/startup.order
echo "link-order: $(wc -l <link/startup.order) functions in link/startup.order"
