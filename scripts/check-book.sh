#!/usr/bin/env bash
# Builds the book (book.toml: the guides in docs/) into target/book, and fails on a broken link
# or anchor between its pages. Installs mdbook into .local/ the first time (cargo install).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version="0.5.4"
root="$PWD/.local/mdbook"
mdbook="$root/bin/mdbook"
if ! [[ -x "$mdbook" ]] || ! "$mdbook" --version | grep -q "$version"; then
    echo "check-book: installing mdbook $version into $root" >&2
    cargo install mdbook --version "$version" --locked --no-default-features --features search \
        --root "$root" --target-dir "$root/target" >&2
    rm -rf "$root/target"
fi
"$mdbook" build
python3 scripts/check-links.py target/book
