#!/usr/bin/env bash
# Admission under overload (BENCHMARKS.md, issue 5): the server pinned to
# CPU 0 and stampede-loadgen to CPU 1, so the load generator cannot starve
# the server. Reservation-only load on 1000 SKUs with ample stock, fsync
# durability, [admission] concurrency_max 128, queue_max 512,
# max_wait_ms 500; the load generator keeps up to 1024 connections open, so
# the server's own admission (not the client's connection pool) sheds.
#   1. peak: offered PEAK_RATE/s for SECS s -> goodput (201s a second)
#   2. overload: offered 5 x PEAK_RATE for SECS s -> goodput, and the p99 of
#      admitted answers (201) against max_wait_ms
#   3. sold out: one SKU sold out, 2000 requests a second for SECS s -> p99
#      of the 409s (the sold-out fast path)
#
#   scripts/goodput.sh [PEAK_RATE] [SECS]     (defaults 12000, 10)
set -euo pipefail
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 4096 connections each side
cd "$(dirname "$0")/.."
. scripts/lib.sh
peak="${1:-12000}"
secs="${2:-10}"
cargo build --release -p stampede --bin stampede >&2
cargo build --release -p loadgen >&2
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/server.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admission]
concurrency_max = 128
queue_max = 512
max_wait_ms = 500
TOML
taskset -c 0 target/release/stampede serve --config "$work/server.toml" --data-dir "$work/data" \
  >"$work/out" 2>"$work/err" &
pid=$!
wait_line "$work/out" '^ready' "$work/err"
addr=$(sed -n 's/^listening on //p' "$work/out")
scenario() { # NAME RATE SKUS STOCK PREFIX CONFIRM DURATION
  cat > "$work/$1.toml" <<TOML
name = "$1"
[[phases]]
name = "$1"
duration_s = ${7:-$secs}
rate = $2
[catalog]
skus = $3
stock = $4
prefix = "$5"
[flow]
confirm = ${6:-0.0}
release = 0.0
[client]
connections = 1024
timeout_ms = 10000
in_flight_max = 50000
TOML
}
load() { # NAME [extra flags]
  local name="$1"; shift
  taskset -c 1 target/release/stampede-loadgen --scenario "$work/$name.toml" \
    --target "http://$addr" --quiet --out "$work/$name" "$@" >"$work/$name.txt"
  python3 - "$work/$name/results.json" "$name" "$secs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); name = sys.argv[2]; secs = float(sys.argv[3])
st = r["statuses"].get("reserve", {})
lat = r["latency_by_status"].get("reserve", {})
ok = st.get("201", 0)
print(f"{name}: offered {r['requests']['arrivals'] / secs:.0f}/s, sent {r['requests']['sent']}, "
      f"late {r['requests']['late']}, dropped {r['requests']['dropped']}; statuses {st}")
print(f"  goodput {ok / secs:.0f}/s (201s over the {secs:.0f} s schedule)")
for status, v in sorted(lat.items()):
    print(f"  {status}: p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms, max {v['max_ms']:.2f} ms")
print(f"  codes {r['codes']}")
PY
}
scenario peak "$peak" 1000 1000000000 sku-
scenario overload $((peak * 5)) 1000 1000000000 sku-
echo "== 1. peak: $peak/s offered"
load peak
echo "== 2. overload: $((peak * 5))/s offered"
load overload --no-setup
# 3. sold out: a SKU of 1 unit, held and confirmed by one shopper, then
# the rush.
scenario sellone 1 1 1 gone- 1.0 1
taskset -c 1 target/release/stampede-loadgen --scenario "$work/sellone.toml" \
  --target "http://$addr" --quiet >/dev/null
scenario soldout 2000 1 1 gone-
echo "== 3. sold out: 2000/s offered on a sold-out SKU"
load soldout --no-setup
