#!/usr/bin/env bash
# Every test: unit tests, the sandbox escape suite (its root-only tests say
# "skipped: needs root" when not root), the end-to-end tests against a real
# attestd, and the interoperability tests against Python's securesystemslib,
# in-toto and in-toto-attestation (installed here, pinned).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
cargo test --workspace
# The escape suite once more, every test through a warm helper (the daemon's
# pool path, `attestd-sandbox serve`).
ATTEST_ESCAPE_WARM=1 cargo test -p attest-sandbox --test escape
