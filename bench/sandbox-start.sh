#!/usr/bin/env bash
# Start cost of a sandboxed /bin/true: attestd-sandbox (no daemon), cold
# (`run`, a fresh helper per step) and warm (`serve`, a helper pre-started
# before its spec is known, as the daemon's pool keeps them), vs bubblewrap
# with the same isolation vs a bare /bin/true, in one run.
# Usage: [MODE=interleaved|sequential] bench/sandbox-start.sh [ITERATIONS]
# (run as root for the full isolation: id-range mapping and cgroup limits)
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
mkdir -p "$WORK/in" "$WORK/out" "$WORK/scratch" "$WORK/wscratch" "$WORK/reports"
ROOTFS='["/usr","/bin","/sbin","/lib","/lib64","/etc/alternatives","/etc/ld.so.cache"]'
SERVE_BINDS=()
for b in /usr /bin /sbin /lib /lib64 /etc/alternatives /etc/ld.so.cache; do SERVE_BINDS+=(--ro-bind "$b"); done
cat > "$WORK/spec.json" <<JSON
{"run_id":"bench","argv":["/bin/true"],"env":[],"input_dir":"$WORK/in","cwd":"",
 "outputs":[],"out_dir":"$WORK/out","scratch_dir":"$WORK/scratch",
 "rootfs":{"kind":"host","ro_binds":$ROOTFS},
 "limits":{"timeout_ms":10000,"memory_bytes":268435456,"pids":64,"cpu_time_ms":10000,
           "max_output_bytes":67108864,"tmp_bytes":67108864,"max_log_bytes":67108864},
 "source_date_epoch":0,"hostname":"attest"}
JSON

# The helper's stdin must be a pipe that stays open (EOF = daemon died).
exec 3< <(exec sleep 100000 2>/dev/null)
SLEEPER=$!

# Each run writes a report of its own, as each of the daemon's builds does
# (replacing an existing file would make ext4 flush the new one first).
RUN=0
ours() { RUN=$((RUN + 1)); "$HELPER" run --spec "$WORK/spec.json" --report "$WORK/reports/$RUN.json" <&3; }
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
warm_once() { # -> W_REPORT, W_EXIT: microseconds to the report and to the exit
  local fifo="$WORK/fifo" out="$WORK/out.fifo" pid t0 t1 t2
  rm -f "$fifo" "$out"; mkfifo "$fifo" "$out"
  exec 4<>"$fifo"
  "$HELPER" serve --scratch-dir "$WORK/wscratch" --hostname attest "${SERVE_BINDS[@]}" \
    <"$fifo" >"$out" 2>&1 & pid=$!
  exec 5<"$out"
  sleep 0.1
  RUN=$((RUN + 1))
  t0=$EPOCHREALTIME
  printf '%s\t%s\n' "$WORK/spec.json" "$WORK/reports/$RUN.json" >&4
  while read -r -u 5 _; do :; done
  t1=$EPOCHREALTIME
  wait "$pid"
  t2=$EPOCHREALTIME
  exec 4>&- 5<&-
  W_REPORT=$((${t1/./} - ${t0/./}))
  W_EXIT=$((${t2/./} - ${t0/./}))
}

# One call of a function, timed: -> T (microseconds).
timed() {
  local t0 t1
  t0=$EPOCHREALTIME
  "$@"
  t1=$EPOCHREALTIME
  T=$((${t1/./} - ${t0/./}))
}

# Sanity: each must succeed, and ours must report a clean exit (a spec the
# helper refuses would otherwise be timed as a fast start).
last_report() { echo "$WORK/reports/$RUN.json"; }
clean_exit() {
  grep -q '"kind": "exited"' "$(last_report)" && grep -q '"code": 0' "$(last_report)" || {
    echo "bench: the step did not exit 0:" >&2; cat "$(last_report)" >&2; exit 1; }
}
ours; clean_exit
bwrap_; bare
warm_once
clean_exit

# MODE=interleaved (default): each round runs every variant once, so a
# change in the machine's load (these machines are shared) hits all of
# them alike, with a pause after each so that the kernel's deferred
# teardown of one (network namespaces are freed by a worker thread) is not
# charged to the next. MODE=sequential: N runs of each variant back to
# back, as the earlier figures were taken (a warm helper still gets its
# idle 100 ms before each timed request). The first 10 rounds are warm-up.
# Medians, in ms.
BARE_T=() BWRAP_T=() OURS_T=() WARM_T=() EXIT_T=()
MODE=${MODE:-interleaved}
if [ "$MODE" = sequential ]; then
  for f in bare bwrap_ ours; do
    for i in $(seq $((N + 10))); do
      timed "$f"
      [ "$i" -gt 10 ] || continue
      case $f in
        bare) BARE_T+=("$T") ;;
        bwrap_) BWRAP_T+=("$T") ;;
        ours) OURS_T+=("$T") ;;
      esac
    done
  done
  for i in $(seq $((N + 10))); do
    warm_once
    [ "$i" -gt 10 ] && WARM_T+=("$W_REPORT") EXIT_T+=("$W_EXIT")
  done
else
  for i in $(seq $((N + 10))); do
    timed bare; b=$T
    sleep 0.02
    timed bwrap_; w=$T
    sleep 0.05
    timed ours; o=$T
    sleep 0.05
    warm_once
    sleep 0.05
    if [ "$i" -gt 10 ]; then
      BARE_T+=("$b") BWRAP_T+=("$w") OURS_T+=("$o") WARM_T+=("$W_REPORT") EXIT_T+=("$W_EXIT")
    fi
  done
fi
median() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
    END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m / 1000 }'
}
BARE=$(median "${BARE_T[@]}")
BWRAP=$(median "${BWRAP_T[@]}")
OURS=$(median "${OURS_T[@]}")
WARM=$(median "${WARM_T[@]}")
WARM_EXIT=$(median "${EXIT_T[@]}")
echo "mode: $MODE    rounds: $N (medians)    kernel: $(uname -r)    cpus: $(nproc)    load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cgroup: $(grep -o '"cgroup": "[^"]*"' "$(last_report)")"
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
