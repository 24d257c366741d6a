#!/usr/bin/env bash
# Verification benchmark: verifications per second of a typical attestd
# envelope (Ed25519 and ECDSA P-256) in our verifier and in securesystemslib,
# and the wall time of one `attest verify` process against one
# securesystemslib-based verification process of the same envelope.
#
# usage: bench/verify.sh [RUNS] [SECONDS]   (defaults 200 and 3)
# The Python side runs in the virtual environment of the pinned packages of
# tests/interop/requirements.txt that scripts/test.sh uses (made, or reused,
# by scripts/interop-venv.sh under target/; never pip into the system
# Python). PYTHON3 picks the interpreter the environment is made from.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/interop-venv.sh)
runs=${1:-200}
seconds=${2:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --quiet --release -p attest --bin attest
cargo build --quiet --release -p attest-provenance --example verify_bench
echo "## in-process verifications per second (${seconds}s each)"
echo "# attest_provenance::verify::verify_envelope (signature, types, subject, expectations)"
target/release/examples/verify_bench "$out" "$seconds"
echo "# securesystemslib Envelope.verify (signature only)"
"$python" bench/verify_sslib.py "$out" "$seconds"

# Wall time of N sequential processes from a bash loop (the loop's fork+exec
# is in both figures).
time_loop() {
    local start end
    start=$(date +%s%N)
    for ((i = 0; i < runs; i++)); do "$@" >/dev/null || { echo "failed: $*" >&2; exit 1; }; done
    end=$(date +%s%N)
    echo $(((end - start) / runs / 1000))
}
echo "## one verification per process, mean of $runs runs (microseconds)"
for alg in ed25519 ecdsa; do
    ours=$(time_loop target/release/attest verify "$out/hello" \
        --provenance "$out/$alg.intoto.jsonl" --key "$out/$alg.pub.pem" --require-hermetic)
    theirs=$(time_loop "$python" tests/interop/sslib_verify.py "$out/$alg.intoto.jsonl" 1 "$out/$alg.pub.pem")
    echo "$alg attest-verify ${ours}us securesystemslib ${theirs}us ratio $(awk "BEGIN{printf \"%.1f\", $theirs/$ours}")x"
done
echo "## machine"
nproc
grep -m1 'model name' /proc/cpuinfo || true
"$python" --version
