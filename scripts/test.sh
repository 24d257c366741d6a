#!/usr/bin/env bash
# Every test: unit tests, the sandbox escape suite, the end-to-end tests
# against a real attestd, and the interoperability tests against Python's
# securesystemslib, in-toto and in-toto-attestation (pinned, installed into
# a virtual environment under target/ by scripts/interop-venv.sh).
#
# Tests that need root skip without it, each with a SKIPPED line, and the
# count is printed at the end; with ATTEST_REQUIRE_ROOT=1 (CI) a skip is a
# failure instead.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
ATTEST_SKIP_LOG="$(cd "$target" && pwd)/test-skips.log"
export ATTEST_SKIP_LOG
: >"$ATTEST_SKIP_LOG"
skips() {
    local n
    n=$(wc -l <"$ATTEST_SKIP_LOG")
    echo "test.sh: $n test run(s) skipped for want of root${ATTEST_REQUIRE_ROOT:+ (ATTEST_REQUIRE_ROOT=$ATTEST_REQUIRE_ROOT)}"
    if [[ "$n" != 0 ]]; then
        cut -f1 "$ATTEST_SKIP_LOG" | sort | uniq -c | sed 's/^/  /'
    fi
}
trap skips EXIT

ATTEST_PYTHON="$(bash scripts/interop-venv.sh)"
export ATTEST_PYTHON
cargo test --workspace
# The escape suite once more, every test through a warm helper (the daemon's
# pool path, `attestd-sandbox serve`).
ATTEST_ESCAPE_WARM=1 cargo test -p attest-sandbox --test escape
