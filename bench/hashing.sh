#!/usr/bin/env bash
# Hashing and content store benchmarks (docs/BENCHMARKS.md, "Hashing and
# content store"). On the same data, in one run:
#   1. a 1 GiB file: tree's hash_file (1 and all cores: N copies at once),
#      ring vs sha2 per read size, `sha256sum` and `openssl dgst -sha256`
#      (1 and N at once);
#   2. a 20,000-file tree of about 300 MB: build_tree (no cache) on 1 and
#      all threads, `openssl dgst -sha256` and `sha256sum` over the same
#      files (one process, then one per core);
#   3. `attest run` over that tree, first (empty store, no digest cache) and
#      seven cached runs (each and their median), vs three runs of
#      `in-toto-run --materials TREE --products OUT` (each and the median);
#   4. peak memory of the daemon and the client while a 1 GiB file goes
#      through `attest run`.
# Usage: bench/hashing.sh [DATA_DIR]   (default /tmp/attest-bench; needs
# about 3.5 GB there). Warm page cache: every input is read once first.
# PARTS="3" bench/hashing.sh runs only the listed parts (default "1 2 3 4").
# Part 3 runs the daemon with --log attestd=debug and prints its timing
# lines (FindMissingBlobs, UploadBlobs, completeness check, materialize,
# file list, build finished) with timestamps, next to each run's start.
# ATTESTD_ROOTFS_HASHING=off (read by attestd) leaves out the hashing of
# the host rootfs, which in-toto-run does not do either.
# Timed figures, never assertions. (Part 4 asks for --memory 4G: the
# step's work tmpfs holds a copy of the 1 GiB input, charged to its cgroup.)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
data=${1:-/tmp/attest-bench}
cpus=$(nproc)
parts=${PARTS:-1 2 3 4}
part() { [[ " $parts " == *" $1 "* ]]; }
mkdir -p "$data"
chmod 711 "$data"

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
# in-toto-run (part 3) from the pinned in-toto of
# tests/interop/requirements.txt, in the virtual environment under target/
# that scripts/test.sh uses: never `pip install` into the system Python,
# which Debian 12 and Ubuntu 23.04+ refuse (PEP 668).
if part 3; then
  venv_python=$(bash scripts/interop-venv.sh)
  intoto_run=$(dirname "$venv_python")/in-toto-run
  [ -x "$intoto_run" ] || { echo "no in-toto-run in $(dirname "$venv_python")" >&2; exit 1; }
fi

echo "==> building (release)"
cargo build --quiet --release --bins -p attestd -p attest -p attest-sandbox
cargo build --quiet --release -p attest-tree --example hash_bench
bin=$root/target/release
hb=$bin/examples/hash_bench

now() { python3 -c 'import time; print(time.time())'; }
elapsed() { python3 -c "print(f'{$(now) - $1:.3f}')"; }

echo "==> data in $data"
big=$data/1g.bin
[ -f "$big" ] || head -c 1073741824 /dev/urandom > "$big"
tree=$data/tree
if [ ! -f "$data/tree.done" ]; then
  rm -rf "$tree"
  python3 - "$tree" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(5)
total = 0
for i in range(20000):
    d = os.path.join(root, f"d{i % 40:02}", f"s{i % 13:02}")
    os.makedirs(d, exist_ok=True)
    size = rng.randint(1000, 29000)  # mean 15 kB -> about 300 MB
    with open(os.path.join(d, f"f{i:05}.dat"), "wb") as f:
        f.write(os.urandom(size))
    total += size
print(f"tree: 20000 files, {total / 1e6:.0f} MB")
EOF
  touch "$data/tree.done"
fi
# Warm the page cache.
cat "$big" > /dev/null
find "$tree" -type f -print0 | xargs -0 cat > /dev/null

if part 1; then
echo "==> 1. one 1 GiB file"
$hb engines "$big"
$hb file "$big" 1
$hb file "$big" "$cpus"
for tool in "sha256sum" "openssl dgst -sha256"; do
  t=$(now); $tool "$big" > /dev/null; echo "$tool threads=1 seconds=$(elapsed "$t")"
  t=$(now)
  for _ in $(seq "$cpus"); do $tool "$big" > /dev/null & done
  wait
  echo "$tool threads=$cpus seconds=$(elapsed "$t") (x$cpus GiB)"
done

fi

if part 2; then
# Scaling shows only on an idle machine: with autogroup scheduling a busy
# neighbour leaves this session the same CPU share at any thread count.
echo "==> 2. the 20,000-file tree, no digest cache (load average $(cut -d' ' -f1-3 /proc/loadavg))"
$hb tree "$tree" 1
$hb tree "$tree" "$cpus"
# The same files through the standard tools: one process, then $cpus at once.
for tool in "openssl dgst -sha256" "sha256sum"; do
  t=$(now); find "$tree" -type f -print0 | xargs -0 $tool > /dev/null
  echo "$tool over the tree threads=1 seconds=$(elapsed "$t")"
  t=$(now)
  find "$tree" -type f -print0 | xargs -0 -P "$cpus" -n $(((20000 + cpus - 1) / cpus)) $tool > /dev/null
  echo "$tool over the tree threads=$cpus seconds=$(elapsed "$t")"
done
fi

echo "==> 3. attest run over the tree vs in-toto-run"
work=$(mktemp -d "$data/run.XXXXXX")
chmod 711 "$work"
export ATTEST_SOCKET=$work/attestd.sock
export XDG_CACHE_HOME=$work/cache
daemon_pid=
stop_daemon() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  daemon_pid=
}
start_daemon() {
  rm -rf "$work/state"
  "$bin/attestd" --state-dir "$work/state" --socket "$ATTEST_SOCKET" --config /dev/null \
    --log attestd=debug --sandbox-helper "$bin/attestd-sandbox" 2>>"$work/attestd.log" &
  daemon_pid=$!
  for _ in $(seq 1 400); do
    [ -S "$ATTEST_SOCKET" ] && return
    sleep 0.05
  done
  cat "$work/attestd.log"; echo "attestd did not start" >&2; exit 1
}
trap 'stop_daemon; rm -rf "$work"' EXIT
cd "$work"
if part 3; then
start_daemon
step=(--out out -- sh -c 'echo done > out')
# Each run's start goes into the daemon's log too, so the timing lines
# printed below read as a timeline.
mark() { echo "$(date -u +%H:%M:%S.%6N) --- $1 (load average $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$work/attestd.log"; }
# Timed with bash's clock, so that no interpreter start-up is counted
# (python3 only does the subtraction, after the end time is taken).
since() { local end=$EPOCHREALTIME; python3 -c "print(f'{$end - $1:.3f}')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
cached=()
runs=("first (hash, upload, store, materialize, sandbox, sign)" "second (cached)" "third (cached)")
for i in 4 5 6 7 8; do runs+=("cached $i"); done
for run in "${runs[@]}"; do
  mark "attest run $run"
  t=$EPOCHREALTIME; "$bin/attest" run --quiet --src "$tree" "${step[@]}" > /dev/null
  s=$(since "$t")
  echo "attest run $run seconds=$s" | tee -a "$work/attestd.log"
  [[ $run == first* ]] || cached+=("$s")
done
echo "attest run cached (${#cached[@]} runs) median seconds=$(median "${cached[@]}")"
openssl genpkey -algorithm ed25519 -out "$work/intoto.pem" 2>/dev/null
intoto=()
for i in 1 2 3; do
  mark "in-toto-run $i"
  t=$EPOCHREALTIME
  "$intoto_run" -n bench --signing-key "$work/intoto.pem" --materials "$tree" --products out -- sh -c 'echo done > out'
  s=$(since "$t")
  echo "in-toto-run --materials TREE --products out seconds=$s"
  intoto+=("$s")
done
echo "in-toto-run (3 runs) median seconds=$(median "${intoto[@]}")"
stop_daemon
echo "--- daemon timeline (UTC)"
sed 's/\x1b\[[0-9;]*m//g' "$work/attestd.log" | grep -E -- 'elapsed_ms|build finished|^[0-9:.]+ ---|seconds=' \
  | sed -E 's/^[0-9-]+T([0-9:.]+)Z/\1/'
fi

part 4 || exit 0
echo "==> 4. peak memory, 1 GiB file through attest run"
mkdir -p "$work/bigsrc"
ln "$big" "$work/bigsrc/1g.bin" 2>/dev/null || cp "$big" "$work/bigsrc/1g.bin"
start_daemon
/usr/bin/time -f "client max RSS %M KiB, wall %e s" \
  "$bin/attest" run --quiet --src "$work/bigsrc" --memory 4G --out out -- sh -c 'echo > out' > /dev/null
echo "daemon $(grep VmHWM /proc/$daemon_pid/status)"
