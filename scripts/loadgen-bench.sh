#!/usr/bin/env bash
# The load generator's own ceiling (BENCHMARKS.md, issue 6): the trivial
# hyper handler (examples/hello.rs) pinned to CPU 0, and on CPU 1 first
# wrk -t1 (the baseline: one thread, the same 64 connections, the same
# POST /v1/reservations bodies via scripts/bench/reserve.lua), then
# stampede-loadgen with one thread at each RATE for SECS s, reservations
# only. For each rate: requests completed per second of the run, the
# share of sends more than 1 ms late, and p50/p99 from the intended time.
# "On schedule" means the run ends on time with few late sends.
#
#   scripts/loadgen-bench.sh [SECS] [RATE...]   (defaults 10, 60000 80000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs="${1:-10}"
shift || true
rates=("${@:-60000 80000 100000}")
# shellcheck disable=SC2206
rates=(${rates[*]})
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
cargo build --release -p stampede --example hello >&2
cargo build --release -p loadgen >&2
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
taskset -c 0 target/release/examples/hello 127.0.0.1:0 >"$work/out" &
pid=$!
wait_line "$work/out" '^listening'
addr=$(sed -n 's/^listening on //p' "$work/out")
echo "hello on $addr (CPU 0); clients on CPU 1; $(date -u +%FT%TZ), $(nproc) vCPUs"
echo "== wrk -t1 -c64 -d${secs}s (POST /v1/reservations)"
taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency -s scripts/bench/reserve.lua "http://$addr" \
  | grep -E "Requests/sec|^ +(50|99)%"
for rate in "${rates[@]}"; do
  cat > "$work/s.toml" <<TOML
name = "self-bench-$rate"
[[phases]]
name = "constant"
duration_s = $secs
rate = $rate
[catalog]
skus = 10000
stock = 1000000
popularity = "uniform"
[flow]
browse = 0.0
confirm = 0.0
release = 0.0
[client]
connections = 64
in_flight_max = 100000
TOML
  echo "== stampede-loadgen --threads 1, $rate/s for ${secs}s"
  taskset -c 1 target/release/stampede-loadgen --scenario "$work/s.toml" --target "http://$addr" \
    --no-setup --no-audit --quiet --out "$work/r$rate" >/dev/null
  python3 - "$work/r$rate/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
q = r["requests"]; lat = r["latency_by_op"]["reserve"]
print("  completed %d in %.2f s = %.0f/s (offered %d); late %.1f%%, dropped %d; p50 %.2f ms, p99 %.2f ms"
      % (q["completed"], r["elapsed_s"], q["completed"] / r["elapsed_s"], q["arrivals"],
         100.0 * q["late"] / max(q["sent"], 1), q["dropped"], lat["p50_ms"], lat["p99_ms"]))
PY
done
