#!/usr/bin/env bash
# Everything CI checks: installs Synapse and PostgreSQL for the end-to-end tests, then rustfmt,
# clippy and the whole test suite. Exits non-zero on the first failing step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
current="setup"
test_log=""
on_exit() {
    local rc=$?
    if [[ -n "$test_log" ]]; then rm -f "$test_log"; fi
    echo
    if [[ $rc -eq 0 && "$current" == "done" ]]; then
        echo "==> test.sh: OK: all checks passed ($summary) in $((SECONDS - started)) s"
    else
        echo "==> test.sh: FAILED at step '$current' (exit $rc) after $((SECONDS - started)) s"
    fi
}
summary=""
trap on_exit EXIT

step() {
    current="$1"
    echo
    echo "==> $1"
}

# rustup installs cargo into ~/.cargo/bin, which non-login shells may not have on PATH.
if ! command -v cargo >/dev/null && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

step "install Synapse"
venv="$(bash scripts/install-synapse.sh)"
export TRESTLE_SYNAPSE_VENV="$venv"

step "install PostgreSQL"
pg_bin="$(bash scripts/install-postgres.sh)"
export TRESTLE_PG_BIN="$pg_bin"
step "install Chromium"; TRESTLE_CHROMIUM="$(bash scripts/install-chromium.sh)"; export TRESTLE_CHROMIUM  # the timeline page test
step "install ngircd"; TRESTLE_NGIRCD="$(bash scripts/install-ngircd.sh)"; export TRESTLE_NGIRCD  # the IRC bridge tests
step "install Prosody"; TRESTLE_PROSODY="$(bash scripts/install-prosody.sh)"; export TRESTLE_PROSODY  # the XMPP bridge tests

step "components"
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done

# A one-off build gains nothing from incremental caches, which would double the target directory.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo test"
test_log="$(mktemp)"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$test_log"
summary="$(awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d tests passed, %d failed, %d ignored", p, f, i }' "$test_log")"

step "contrib: alert rules, dashboard queries, systemd unit"
bash scripts/check-contrib.sh "$(realpath "${CARGO_TARGET_DIR:-target}")/debug/trestle"

# The demo as a newcomer runs it, on the debug build cargo test made (no release build), in a
# temporary demo directory on free ports: an IRC line reaches the demo user from its ghost.
step "the demo, end to end"
python3 scripts/check-demo.py "$(realpath "${CARGO_TARGET_DIR:-target}")/debug/trestle"

step "the book: build and check its links"
bash scripts/check-book.sh
current="done"
