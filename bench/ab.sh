#!/bin/bash
# Interleaved A/B rounds of the benchmark, unpinned and pinned, for two builds.
#
#   bench/ab.sh ROUNDS OUTDIR DIR_A DIR_B [bench arguments...]
#
# DIR_A and DIR_B each hold `bench`, `bench-echo` and `null-appservice` (the driver starts the
# appservices from beside itself). To compare only bench-echo, copy one build's bench-echo beside
# the other's driver and null appservice, so that both run against the same yardstick. Rounds
# alternate the builds, so that a machine getting busier or quieter weighs on both alike. Output:
# OUTDIR/<name of DIR>[-pinned].txt, one `bench --runs 1` per round. B_ECHO_ARGS, if set, is given to
# DIR_B's bench-echo only (an option DIR_A's build may not know, such as `--max-in-flight 0`).
set -euo pipefail
rounds=$1 out=$2 a=$3 b=$4
shift 4
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
    for dir in "$a" "$b"; do
        for pin in "" "--pin"; do
            file="$out/$(basename "$dir")${pin:+-pinned}.txt"
            echo "== round $round $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" >>"$file"
            extra=()
            if [[ "$dir" == "$b" && -n "${B_ECHO_ARGS:-}" ]]; then extra=(--echo-args "$B_ECHO_ARGS"); fi
            "$dir/bench" --runs 1 --scenarios echo,echo1 $pin "${extra[@]}" "$@" >>"$file" 2>&1
        done
    done
done
