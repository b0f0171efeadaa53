#!/usr/bin/env bash
# What counting for /metrics costs in throughput: two stampede servers,
# server.metrics = true and false, otherwise the same, measured
# alternately ROUNDS times (on, off, on, off...) so the machine's drift
# falls on both; prints each run and the median of the per-round ratios.
# Every server on CPU 0, wrk (-t1 -c64) on CPU 1, one hot SKU, POST
# /v1/reservations. DURABILITY (default none) is wal.durability: "none"
# makes the run CPU-bound, where counting shows most; "fsync" is the
# production setting.
#
#   scripts/metrics-cost.sh [ROUNDS] [SECONDS]     (defaults 5, 8)
#   DURABILITY=fsync scripts/metrics-cost.sh
#
# Needs wrk and two CPUs. Loopback only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rounds="${1:-5}"
secs="${2:-8}"
durability="${DURABILITY:-none}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs (server on 0, wrk on 1)" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --bin stampede >/dev/null 2>&1
work="$(mktemp -d)"
trap stop_started EXIT

start() { # start NAME METRICS: prints the address
  local name="$1"
  printf '%s\n' "[wal]" "durability = \"$durability\"" "[holds]" "retained_max = 40000000" \
    "[server]" "metrics = $2" >"$work/$name.toml"
  taskset -c 0 target/release/stampede serve --listen 127.0.0.1:0 --admin-listen "" \
    --data-dir "$work/$name-data" --config "$work/$name.toml" >"$work/$name.out" 2>"$work/$name.err" &
  started "$!"
  for _ in $(seq 200); do grep -q '^ready' "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  local addr
  addr=$(sed -n 's/^listening on //p' "$work/$name.out")
  curl -sf -X PUT "http://$addr/v1/skus/sku-000000" -H 'Content-Type: application/json' \
    -d '{"stock":1000000000}' >/dev/null
  echo "$addr"
}

on=$(start on true)
off=$(start off false)
: >"$work/results"
for r in $(seq "$rounds"); do
  for side in on off; do
    addr=$on; [ "$side" = off ] && addr=$off
    rps=$(HOT_SKU=1 taskset -c 1 wrk -t1 -c64 -d"${secs}s" -s scripts/bench/reserve.lua \
      "http://$addr" | sed -n 's/^Requests\/sec: *//p')
    echo "round $r metrics $side: $rps req/s" >&2
    echo "$r $side $rps" >>"$work/results"
  done
done
python3 - "$work/results" "$durability" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
on = {int(r): float(v) for r, s, v in rows if s == "on"}
off = {int(r): float(v) for r, s, v in rows if s == "off"}
ratios = [on[r] / off[r] for r in sorted(on)]
print(f"durability {sys.argv[2]}, {len(ratios)} rounds")
print("  metrics on  req/s: " + ", ".join(f"{on[r]:,.0f}" for r in sorted(on)) + f"  (median {statistics.median(on.values()):,.0f})")
print("  metrics off req/s: " + ", ".join(f"{off[r]:,.0f}" for r in sorted(off)) + f"  (median {statistics.median(off.values()):,.0f})")
print("  on / off per round: " + ", ".join(f"{x:.3f}" for x in ratios))
print(f"  median on / off: {statistics.median(ratios):.3f}  (cost {100 * (1 - statistics.median(ratios)):.1f}%)")
PY
