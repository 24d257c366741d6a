#!/usr/bin/env bash
# Cost of hashing the host rootfs (attestd --rootfs-hashing on), in three
# figures, from the daemon's own log lines:
#   1. the first hash of the rootfs binds on a fresh state dir (every file
#      read; the page cache is left as it is, so say whether /usr was cached);
#   2. the same walk after a restart on that state dir (digests from
#      STATE/rootfs-digests.bin: stat only);
#   3. per build: the re-validation walk after the step (stat only), how
#      long the build waited for it, and `attest run`'s wall time with
#      hashing on vs off, over N builds of examples/hello-c each.
# usage: bench/rootfs.sh [N]   (as root, like the daemon)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
n=${1:-10}
target=${CARGO_TARGET_DIR:-$root/target}

cargo build --quiet --release --bins
bin=$target/release
work=$(mktemp -d /tmp/attestd-rootfs-bench.XXXXXX)
chmod 711 "$work"
export ATTEST_SOCKET=$work/attestd.sock XDG_CACHE_HOME=$work/cache
daemon_pid=
stop() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  daemon_pid=
}
trap 'stop; rm -rf "$work"' EXIT

start() { # start STATE LOG HASHING
  rm -f "$ATTEST_SOCKET"
  NO_COLOR=1 "$bin/attestd" --state-dir "$1" --socket "$ATTEST_SOCKET" --config /dev/null \
    --rootfs-hashing "$3" --log attestd=debug 2>"$2" &
  daemon_pid=$!
  for _ in $(seq 1 400); do [ -S "$ATTEST_SOCKET" ] && return; sleep 0.05; done
  cat "$2"; echo "attestd did not start" >&2; exit 1
}

wait_hashed() { # wait_hashed LOG: prints the "rootfs hashed" line's fields
  for _ in $(seq 1 6000); do
    if grep -q "rootfs hashed" "$1"; then
      grep "rootfs hashed" "$1" | sed 's/.*rootfs hashed //'
      return
    fi
    sleep 0.1
  done
  echo "no 'rootfs hashed' line in $1" >&2; exit 1
}

builds() { # builds LABEL: N builds, prints the mean wall time in ms
  cd "$work"
  local total=0
  for i in $(seq 1 "$n"); do
    mkdir -p "src$i" && cp "$root/examples/hello-c/hello.c" "src$i/"
    echo "/* $i */" >>"src$i/hello.c" # a new input tree each time
    local t0=$EPOCHREALTIME
    "$bin/attest" run --quiet --src "src$i" --out hello -- cc -o hello hello.c >/dev/null
    local t1=$EPOCHREALTIME
    total=$(python3 -c "print($total + ($t1 - $t0) * 1000)")
  done
  python3 -c "print(f'$1: mean attest run {$total / $n:.0f} ms over $n builds')"
  cd "$root"
}

echo "load: $(uptime | sed 's/.*load average: //')"
find /usr -xdev 2>/dev/null | wc -l | sed 's/^/entries under \/usr: /'

start "$work/state" "$work/on.log" on
echo "1. first hash (fresh state dir): $(wait_hashed "$work/on.log")"
builds "3. hashing on"
grep "rootfs re-validated" "$work/on.log" | sed 's/.*rootfs re-validated after the step //' |
  python3 -c '
import re, sys
rows = [dict(re.findall(r"(\w+)=(\d+)", l)) for l in sys.stdin]
walk = sorted(int(r["walk_ms"]) for r in rows)
waited = sorted(int(r["waited_ms"]) for r in rows)
read = sum(int(r["files_read"]) for r in rows)
entries = rows[0]["entries"]
print(f"   per-build re-validation: walk median {walk[len(walk)//2]} ms (min {walk[0]}, max {walk[-1]}), "
      f"waited median {waited[len(waited)//2]} ms, files read {read}, entries {entries}")'
stop

start "$work/state" "$work/restart.log" on
echo "2. after a restart (cache file): $(wait_hashed "$work/restart.log")"
stop

start "$work/state-off" "$work/off.log" off
builds "3. hashing off"
stop
echo "load: $(uptime | sed 's/.*load average: //')"
