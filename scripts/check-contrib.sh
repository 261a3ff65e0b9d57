#!/usr/bin/env bash
# Checks what contrib/ ships for operators, with the tools that will read it:
# - the Prometheus alert rules parse and pass their own unit tests (promtool);
# - every query of the Grafana dashboard parses as PromQL (promtool, on a rules file made
#   from the dashboard's queries with Grafana's variables filled in);
# - the systemd unit passes `systemd-analyze verify`, pointed at a built `trestle`.
# That every metric these name exists is checked by the framework's tests (metrics.rs).
# Usage: scripts/check-contrib.sh [path of a built trestle binary]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

trestle="${1:-$PWD/target/debug/trestle}"
promtool="$(bash scripts/install-promtool.sh)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd contrib/prometheus && "$promtool" check rules trestle-alerts.yml && "$promtool" test rules trestle-alerts.test.yml)

python3 - contrib/grafana/trestle.json "$work/dashboard-rules.yml" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
if not exprs:
    sys.exit("the dashboard has no queries")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, expr in enumerate(exprs):
        expr = expr.replace("$__rate_interval", "5m").replace("$appservice", ".*")
        out.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(expr)}\n")
print(f"dashboard: {len(exprs)} queries", file=sys.stderr)
PY
"$promtool" check rules "$work/dashboard-rules.yml"

if ! command -v systemd-analyze >/dev/null; then
    echo "check-contrib: installing systemd (for systemd-analyze) with apt-get" >&2
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends systemd >&2
fi
[[ -x "$trestle" ]] || { echo "check-contrib: no trestle binary at $trestle (build it first)" >&2; exit 1; }
sed "s|/usr/local/bin/trestle|$trestle|" contrib/systemd/trestle.service >"$work/trestle.service"
systemd-analyze verify "$work/trestle.service"
echo "check-contrib: contrib/ is sound" >&2
