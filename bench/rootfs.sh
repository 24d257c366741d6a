#!/usr/bin/env bash
# Cost of hashing the host rootfs (attestd --rootfs-hashing on), from the
# daemon's own log lines and `attest run`'s wall time:
#   0. a build started right after a fresh daemon starts: its wall time and
#      what its provenance says of rootfs:/usr (the first hash is running);
#   1. the first hash of the rootfs binds on a fresh state dir (every file
#      read; the page cache is left as it is, so say whether /usr was cached);
#   2. the same walk after a restart on that state dir (digests from
#      STATE/rootfs-digests.bin: stat only; what a build pays for a bind
#      the change feed saw change);
#   3. per build: how many binds kept their digest through the change feed
#      and how many were walked again, how long the build waited for the
#      rootfs check, and `attest run`'s wall time with hashing on vs off,
#      over N builds of examples/hello-c each.
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

usr_status() { # usr_status DIR: what DIR/hello.intoto.jsonl says of rootfs:/usr
  python3 -c '
import base64, json, sys
env = json.loads(open(sys.argv[1]).readline())
st = json.loads(base64.b64decode(env["payload"]))
dep = next(d for d in st["predicate"]["buildDefinition"]["resolvedDependencies"] if d["name"] == "rootfs:/usr")
a = dep["annotations"]
print("hashed" if a["hashed"] else "hashed: false, reason: " + a["reason"])' "$1/hello.intoto.jsonl"
}

first_build() { # first_build LABEL: one build right away, its wall time and rootfs:/usr
  mkdir -p "$work/first-$1" && cp "$root/examples/hello-c/hello.c" "$work/first-$1/"
  echo "/* first $1 */" >>"$work/first-$1/hello.c"
  local t0=$EPOCHREALTIME
  (cd "$work/first-$1" && "$bin/attest" run --quiet --src . --out hello -- cc -o hello hello.c >/dev/null)
  local t1=$EPOCHREALTIME
  python3 -c "print(f'0. first build after $1: attest run {($t1 - $t0) * 1000:.0f} ms')"
  echo "   its rootfs:/usr: $(usr_status "$work/first-$1" | cut -c1-80)"
}

builds() { # builds LABEL: N builds, prints the median (min-max) and mean wall time in ms
  cd "$work"
  local times=()
  for i in $(seq 1 "$n"); do
    mkdir -p "src$i" && cp "$root/examples/hello-c/hello.c" "src$i/"
    echo "/* $i */" >>"src$i/hello.c" # a new input tree each time
    local t0=$EPOCHREALTIME
    "$bin/attest" run --quiet --src "src$i" --out hello -- cc -o hello hello.c >/dev/null
    local t1=$EPOCHREALTIME
    times+=("$(python3 -c "print(($t1 - $t0) * 1000)")")
  done
  python3 -c "
import sys
t = sorted(float(x) for x in sys.argv[1:])
print(f'$1: attest run median {t[len(t)//2]:.0f} ms ({t[0]:.0f}-{t[-1]:.0f}), mean {sum(t)/len(t):.0f} ms over {len(t)} builds')" "${times[@]}"
  cd "$root"
}

echo "load: $(uptime | sed 's/.*load average: //')"
find /usr -xdev 2>/dev/null | wc -l | sed 's/^/entries under \/usr: /'

start "$work/state" "$work/on.log" on
first_build "a fresh start"
echo "1. first hash (fresh state dir): $(wait_hashed "$work/on.log")"
builds "3. hashing on"
# The first line is the first build's, which ended during the first hash.
grep "rootfs re-validated" "$work/on.log" | tail -n +2 | sed 's/.*rootfs re-validated after the step //' |
  python3 -c '
import re, sys
rows = [dict(re.findall(r"(\w+)=(\d+)", l)) for l in sys.stdin]
col = lambda k: sorted(int(r[k]) for r in rows)
reused, walked, entries, read = (sum(col(k)) for k in ("reused", "walked", "entries", "files_read"))
walk, waited = col("walk_ms"), col("waited_ms")
mid = len(rows) // 2
print(f"   per-build rootfs check over {len(rows)} builds: binds reused {reused}, walked {walked} "
      f"(entries stat-ed {entries}, files read {read}), walk median {walk[mid]} ms, "
      f"waited median {waited[mid]} ms (max {waited[-1]})")'
stop

start "$work/state" "$work/restart.log" on
first_build "a restart"
echo "2. after a restart (cache file): $(wait_hashed "$work/restart.log")"
# Again, without the page cache just churned by reading 5 GB.
builds "3. hashing on, after the restart"
stop

start "$work/state-off" "$work/off.log" off
first_build "a fresh start, hashing off"
builds "3. hashing off"
stop
echo "load: $(uptime | sed 's/.*load average: //')"
