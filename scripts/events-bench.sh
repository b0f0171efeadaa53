#!/usr/bin/env bash
# What event-stream subscribers cost the reservations: one server
# (wal.durability = fsync), N subscribers attached to GET /v1/events
# (examples/sse_clients.rs, reading everything), then wrk (1 thread, 64
# connections, DURATION s) of reservations; N = 0, 100, 1000, the three
# in turn, ROUNDS times (same run, same server: medians and ratios).
# Two loads:
#   quiet: scripts/bench/reserve.lua over 10,000 SKUs with ample stock
#          (no event: the cost of the streams themselves);
#   churn: scripts/bench/reserve_churn.lua over 2,000 SKUs of stock 1
#          with 1 s holds (every hold sells its SKU out and expires: a
#          steady stream of stock.out, hold.expired, stock.back).
#
# Each line also gives the CPU seconds the server and the subscribers'
# process used during the wrk run (from /proc: where the time goes).
#
# With TYPES set, the subscribers ask for those types only (?types=...);
# FLUSH_MS sets events.flush_interval_ms (default 50). With GZIP=1 the
# subscribers take gzip streams and inflate them (bytes are then those on
# the wire); GZIP=1 INFLATE=0: they take gzip streams and discard them
# unread, as the plain subscribers do theirs.
#
#   [TYPES=...] [GZIP=1] scripts/events-bench.sh [DURATION_S] [ROUNDS] [LOADS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
rounds="${2:-2}"
loads="${3:-quiet churn}"
types="${TYPES:-}"
. scripts/lib.sh
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p stampede --bin stampede --example sse_clients
work="$(mktemp -d)"
trap stop_started EXIT
ulimit -n 65536 2>/dev/null || true
printf '[events]\nsubscribers_max = 2000\nflush_interval_ms = %s\n' "${FLUSH_MS:-50}" >"$work/c.toml"
target/release/stampede serve --listen 127.0.0.1:0 --data-dir "$work/data" --admin-listen "" \
  --config "$work/c.toml" >"$work/out" 2>"$work/err" &
server=$!
started $server
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
wait_line "$work/out" '^ready' "$work/err"
addr=$(sed -n 's/^listening on //p' "$work/out")
python3 - "$addr" <<'PY'
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
def put(sku, stock):
    c.request("PUT", f"/v1/skus/{sku}", body=f'{{"stock":{stock}}}'.encode(),
              headers={"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status in (200, 201), r.status
for n in range(10000):
    put(f"sku-{n:06d}", 1000000000)
for n in range(2000):
    put(f"churn-{n:06d}", 1)
PY
echo "== $(date -u +%F) $(nproc) cores, wrk -t1 -c64 -d${duration}s, $rounds rounds, types ${types:-all}, flush_interval_ms ${FLUSH_MS:-50}, gzip ${GZIP:-0}, inflate ${INFLATE:-1}"
for round in $(seq "$rounds"); do
  for load in $loads; do
    script=scripts/bench/reserve.lua
    [ "$load" = churn ] && script=scripts/bench/reserve_churn.lua
    for n in 0 100 1000; do
      clients=""
      if [ "$n" -gt 0 ]; then
        target/release/examples/sse_clients "$addr" "$n" $types >"$work/sse" 2>&1 &
        clients=$!
        started "$clients"
        wait_line "$work/sse" '^open' "$work/sse"
        open=$(sed -n 's/^open //p' "$work/sse")
      else
        open=0
      fi
      s0=$(cpu_s "$server"); c0=0
      [ -n "$clients" ] && c0=$(cpu_s "$clients")
      out=$(wrk -t1 -c64 -d"${duration}s" -s "$script" "http://$addr" 2>&1)
      s1=$(cpu_s "$server"); c1=0
      [ -n "$clients" ] && c1=$(cpu_s "$clients")
      cpu=$(awk -v s0="$s0" -v s1="$s1" -v c0="$c0" -v c1="$c1" \
        'BEGIN {printf "cpu s: server %.2f, subscribers %.2f", s1 - s0, c1 - c0}')
      rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      lat=$(echo "$out" | grep '^p50')
      extra=""
      if [ -n "$clients" ]; then
        extra=" | streams: $(tail -1 "$work/sse")"
        kill "$clients" 2>/dev/null || true
        wait "$clients" 2>/dev/null || true
      fi
      echo "round $round $load subscribers=$n (open $open): $rate req/s ($lat; $cpu)$extra"
    done
  done
done
curl -s "http://$addr/v1/stats" | python3 -c 'import json,sys; print("events:", json.load(sys.stdin)["events"])'
