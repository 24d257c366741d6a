#!/usr/bin/env bash
# Every test: unit tests, the sandbox escape suite (its root-only tests say
# "skipped: needs root" when not root), the end-to-end tests against a real
# attestd, and the interoperability tests against Python's securesystemslib,
# in-toto and in-toto-attestation (installed here, pinned).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
cargo test --workspace
