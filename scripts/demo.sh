#!/usr/bin/env bash
# The main job on the embedded defaults: build attestd and attest, start a
# daemon with a throw-away state dir, compile examples/hello-c inside its
# sandbox, attest it, verify it, run it; then the same build again (cached:
# nothing is re-hashed or uploaded). Stops the daemon at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "==> building attestd, attestd-sandbox and attest"
cargo build --quiet --bins
bin=$root/target/debug

work=$(mktemp -d /tmp/attestd-demo.XXXXXX)
# The sandbox's unprivileged uid must traverse the way to its run directory.
chmod 711 "$work"
export ATTEST_SOCKET=$work/attestd.sock
export XDG_CACHE_HOME=$work/cache
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> starting attestd (state in $work/state, log in $work/attestd.log)"
"$bin/attestd" --state-dir "$work/state" --socket "$ATTEST_SOCKET" --config /dev/null 2>"$work/attestd.log" &
daemon_pid=$!
for _ in $(seq 1 200); do
  [ -S "$ATTEST_SOCKET" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/attestd.log"; echo "attestd failed to start" >&2; exit 1; }
  sleep 0.05
done

cd "$work"
echo "==> attest run: compile examples/hello-c in the sandbox and sign its provenance"
start=$EPOCHREALTIME
"$bin/attest" run --src "$root/examples/hello-c" --out hello -- cc -O2 -Wall -o hello hello.c
first=$(python3 -c "print(${EPOCHREALTIME} - ${start})")

echo "==> attest pubkey > attestd.pub.pem"
"$bin/attest" pubkey > attestd.pub.pem

echo "==> attest verify hello --provenance hello.intoto.jsonl --key attestd.pub.pem"
"$bin/attest" verify hello --provenance hello.intoto.jsonl --key attestd.pub.pem \
  --build-type https://attestd.dev/buildtypes/sandboxed-step/v1 --require-hermetic

echo "==> ./hello"
./hello

echo "==> the same build again (digest cache and content store: nothing to hash or upload)"
start=$EPOCHREALTIME
"$bin/attest" run --src "$root/examples/hello-c" --out hello -- cc -O2 -Wall -o hello hello.c
second=$(python3 -c "print(${EPOCHREALTIME} - ${start})")
"$bin/attest" verify hello --provenance hello.intoto.jsonl --key attestd.pub.pem >/dev/null

printf '==> done: first run %.3f s, second run %.3f s (wall time of attest run)\n' "$first" "$second"
