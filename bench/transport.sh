#!/usr/bin/env bash
# The hello-c build (examples/hello-c, as scripts/demo.sh runs it) over
# the Unix socket and over TCP with mutual TLS, against one daemon, in one
# run (docs/BENCHMARKS.md, "Transport: Unix socket and mTLS").
#
# A throw-away CA, server and client certificates are made with openssl;
# the daemon listens on its socket and on 127.0.0.1 (a port the kernel
# picks). Each transport gets one warm-up build (the first one hashes and
# uploads the tree and warms the daemon's helper pool), then RUNS timed
# `attest run`s of the unchanged tree, alternating transports so that
# load on the machine falls on both alike; each run's wall time and each
# transport's median are printed. Also RUNS `attest pubkey` per transport:
# the connection set-up alone (a new TLS handshake per process).
# Usage: bench/transport.sh   (RUNS=10 by default; PROFILE=release to
# time an optimized build, default debug as scripts/demo.sh builds)
# Timed figures, never assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${RUNS:-10}
profile=${PROFILE:-debug}

echo "==> building attestd, attestd-sandbox and attest ($profile)"
if [ "$profile" = release ]; then
  cargo build --quiet --release --bins -p attestd -p attest -p attest-sandbox
else
  cargo build --quiet --bins -p attestd -p attest -p attest-sandbox
fi
bin=$root/target/$profile

work=$(mktemp -d /tmp/attestd-transport.XXXXXX)
chmod 711 "$work"
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> a throw-away CA and certificates (openssl, P-256)"
pki=$work/pki
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
    -days 1 -subj "/CN=bench ca" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  leaf() { # name subject san eku
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' "$3" "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out "$1.crt" -extfile "$1.ext" 2>/dev/null
    chmod 600 "$1.key"
  }
  leaf server "/CN=localhost" "DNS:localhost,IP:127.0.0.1" serverAuth
  leaf runner "/CN=bench runner" "URI:spiffe://example.org/runner/bench" clientAuth
)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export XDG_CACHE_HOME=$work/cache
socket=$work/attestd.sock
echo "==> attestd on $socket and tcp://127.0.0.1:$port (log in $work/attestd.log)"
"$bin/attestd" --state-dir "$work/state" --socket "$socket" --config /dev/null \
  --listen "tcp://127.0.0.1:$port" --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" \
  --client-ca "$pki/ca.crt" --allow-client 'spiffe://example.org/runner/*' 2>"$work/attestd.log" &
daemon_pid=$!
for _ in $(seq 1 200); do
  [ -S "$socket" ] && python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/attestd.log"; echo "attestd failed to start" >&2; exit 1; }
  sleep 0.05
done

# attest SUBCOMMAND, then where the daemon is.
unix() { "$bin/attest" "$1" --socket "$socket" "${@:2}"; }
mtls() {
  "$bin/attest" "$1" --endpoint "https://127.0.0.1:$port" --tls-ca "$pki/ca.crt" \
    --tls-cert "$pki/runner.crt" --tls-key "$pki/runner.key" "${@:2}"
}
build() { "$1" run --quiet --src "$root/examples/hello-c" --out hello --out-dir "$work/out-$1" \
  --attestation "$work/out-$1/hello.intoto.jsonl" -- cc -O2 -Wall -o hello hello.c >/dev/null; }

mkdir -p "$work/out-unix" "$work/out-mtls"
echo "==> warm-up: one build per transport"
build unix
build mtls

declare -A times
for kind in build pubkey; do
  for t in unix mtls; do times[$kind-$t]=""; done
done
echo "==> $runs timed runs per transport, alternating"
for i in $(seq 1 "$runs"); do
  for t in unix mtls; do
    # $EPOCHREALTIME: a clock read inside bash, no process of its own.
    s=$EPOCHREALTIME; build "$t"; e=$EPOCHREALTIME
    times[build-$t]+="$(python3 -c "print(f'{$e - $s:.3f}')") "
    s=$EPOCHREALTIME; "$t" pubkey >/dev/null; e=$EPOCHREALTIME
    times[pubkey-$t]+="$(python3 -c "print(f'{$e - $s:.3f}')") "
  done
done

median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" $1; }
for kind in build pubkey; do
  for t in unix mtls; do
    printf '%-7s %-5s runs (s): %s\n' "$kind" "$t" "${times[$kind-$t]}"
    printf '%-7s %-5s median: %s s\n' "$kind" "$t" "$(median "${times[$kind-$t]}")"
  done
done
echo "==> provenance requesters"
"$bin/attest" inspect "$work/out-unix/hello.intoto.jsonl" | grep 'requested by'
"$bin/attest" inspect "$work/out-mtls/hello.intoto.jsonl" | grep 'requested by'
