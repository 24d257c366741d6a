#!/usr/bin/env bash
# Start cost of a sandboxed /bin/true: attestd-sandbox (no daemon), cold
# (`run`, a fresh helper per step) and warm (`serve`, a helper pre-started
# before its spec is known, as the daemon's pool keeps them), vs bubblewrap
# with the same isolation vs a bare /bin/true, in one run.
# Usage: bench/sandbox-start.sh [ITERATIONS]   (run as root for the full
# isolation: id-range mapping and cgroup limits)
set -euo pipefail
N=${1:-300}
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p attest-sandbox --bin attestd-sandbox
HELPER="$TARGET/release/attestd-sandbox"
if ! command -v bwrap >/dev/null; then
  apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null
fi

WORK=$(mktemp -d /var/tmp/attest-bench.XXXXXX)
SLEEPER=
trap '[ -n "$SLEEPER" ] && kill "$SLEEPER"; rm -rf "$WORK"' EXIT
chmod 711 "$WORK" # the setup runs as the mapped uid 100000 and must traverse it
mkdir -p "$WORK/in" "$WORK/out" "$WORK/scratch" "$WORK/wscratch"
ROOTFS='["/usr","/bin","/sbin","/lib","/lib64","/etc/alternatives","/etc/ld.so.cache"]'
SERVE_BINDS=()
for b in /usr /bin /sbin /lib /lib64 /etc/alternatives /etc/ld.so.cache; do SERVE_BINDS+=(--ro-bind "$b"); done
cat > "$WORK/spec.json" <<JSON
{"run_id":"bench","argv":["/bin/true"],"env":[],"input_dir":"$WORK/in","cwd":"",
 "outputs":[],"out_dir":"$WORK/out","scratch_dir":"$WORK/scratch",
 "rootfs":{"kind":"host","ro_binds":$ROOTFS},
 "limits":{"timeout_ms":10000,"memory_bytes":268435456,"pids":64,"cpu_time_ms":10000,
           "max_output_bytes":67108864,"tmp_bytes":67108864},
 "source_date_epoch":0,"hostname":"attest"}
JSON

# The helper's stdin must be a pipe that stays open (EOF = daemon died).
exec 3< <(exec sleep 100000 >/dev/null 2>&1)
SLEEPER=$!

ours() { "$HELPER" run --spec "$WORK/spec.json" --report "$WORK/report.json" <&3; }
bwrap_() {
  bwrap --unshare-all --die-with-parent --ro-bind /usr /usr \
    --symlink usr/bin /bin --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
    --proc /proc --dev /dev --tmpfs /tmp --chdir / /bin/true
}
bare() { /bin/true; }

# Warm: start `attestd-sandbox serve` (untimed), give it 100 ms to join its
# cgroup and build its sandbox up to the waiting step, as a pooled helper
# would have while idle, then time from writing the request line to (a) EOF
# on the helper's stdout+stderr, which is when the report is in place and
# what the daemon waits for, and (b) the helper's exit, after it has waited
# for the sandbox's namespaces to be torn down and removed its cgroup.
# $EPOCHREALTIME and `read` are builtins: no fork in the timing.
warm_once() { # -> adds the microseconds of one warm run to WARM_US, EXIT_US
  local fifo="$WORK/fifo" out="$WORK/out.fifo" pid t0 t1 t2
  rm -f "$fifo" "$out"; mkfifo "$fifo" "$out"
  exec 4<>"$fifo"
  "$HELPER" serve --scratch-dir "$WORK/wscratch" --hostname attest "${SERVE_BINDS[@]}" \
    <"$fifo" >"$out" 2>&1 & pid=$!
  exec 5<"$out"
  sleep 0.1
  t0=$EPOCHREALTIME
  printf '%s\t%s\n' "$WORK/spec.json" "$WORK/report.json" >&4
  while read -r -u 5 _; do :; done
  t1=$EPOCHREALTIME
  wait "$pid"
  t2=$EPOCHREALTIME
  exec 4>&- 5<&-
  WARM_US=$((WARM_US + ${t1/./} - ${t0/./}))
  EXIT_US=$((EXIT_US + ${t2/./} - ${t0/./}))
}
measure_warm() { # -> "mean ms to the report" "mean ms to the exit"
  WARM_US=0 EXIT_US=0
  for _ in $(seq 10); do warm_once; done
  WARM_US=0 EXIT_US=0
  for _ in $(seq "$N"); do warm_once; done
  echo "$(echo "scale=3; $WARM_US / $N / 1000" | bc) $(echo "scale=3; $EXIT_US / $N / 1000" | bc)"
}

# Sanity: each must succeed, and ours must report a clean exit.
ours; grep -q '"kind": "exited"' "$WORK/report.json" && grep -q '"code": 0' "$WORK/report.json"
bwrap_; bare
rm -f "$WORK/report.json"; WARM_US=0 EXIT_US=0; warm_once
grep -q '"kind": "exited"' "$WORK/report.json" && grep -q '"code": 0' "$WORK/report.json"

measure() { # name, function -> mean ms per run
  local start end
  for _ in $(seq 10); do "$2"; done # warm-up
  start=$(date +%s%N)
  for _ in $(seq "$N"); do "$2"; done
  end=$(date +%s%N)
  echo "scale=3; ($end - $start) / $N / 1000000" | bc
}

BARE=$(measure bare bare)
BWRAP=$(measure bwrap bwrap_)
OURS=$(measure ours ours)
read -r WARM WARM_EXIT <<<"$(measure_warm)"
echo "iterations: $N    kernel: $(uname -r)    cpus: $(nproc)"
echo "cgroup: $(grep -o '"cgroup": "[^"]*"' "$WORK/report.json")"
printf "%-34s %8s ms\n" "bare /bin/true" "$BARE"
printf "%-34s %8s ms\n" "bwrap --unshare-all, ro /usr" "$BWRAP"
printf "%-34s %8s ms\n" "attestd-sandbox run (cold, full)" "$OURS"
printf "%-34s %8s ms\n" "attestd-sandbox serve (warm, full)" "$WARM"
printf "%-34s %8s ms\n" "  the same, until the helper exits" "$WARM_EXIT"
echo "cold / bwrap = $(echo "scale=2; $OURS / $BWRAP" | bc)"
echo "warm / bwrap = $(echo "scale=2; $WARM / $BWRAP" | bc)"
echo "warm until exit / bwrap = $(echo "scale=2; $WARM_EXIT / $BWRAP" | bc)"
echo "ours / bare  = $(echo "scale=2; $OURS / $BARE" | bc)"
echo "bwrap / bare = $(echo "scale=2; $BWRAP / $BARE" | bc)"
