#!/usr/bin/env bash
# Two (or more) builds of stampede on the embedded store, alternated, the
# way scripts/http-bench.sh measures its reservation line: each BIN in
# turn on a fresh data dir (wal.durability = "fsync", 10k SKUs), pinned
# to CPU 0, and wrk (1 thread, CONNECTIONS connections) on CPU 1 POSTing
# one-unit reservations of one hot SKU for SECONDS. Then, per BIN, the
# median of its runs. A check that a change costs nothing on the HTTP
# path; compare builds of one machine in one run only.
#
#   SECONDS_EACH=10 CONNECTIONS=64 scripts/http-ab.sh OLD_BIN NEW_BIN OLD_BIN NEW_BIN
#
# Build an older tree with `git worktree add /tmp/old REV` and
# `CARGO_TARGET_DIR=/tmp/old-target cargo build --release --bin stampede`.
# Needs wrk (apt-get install -y wrk), python3, curl and two CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ "$#" -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs (server on 0, wrk on 1)" >&2; exit 1; }
secs="${SECONDS_EACH:-10}"
conns="${CONNECTIONS:-64}"
results=$(mktemp)
trap '[ -n "${work:-}" ] && stop_started; rm -f "$results"' EXIT
for bin in "$@"; do
  work=$(mktemp -d)
  printf '[server]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = ""\n[wal]\ndurability = "fsync"\n[holds]\nretained_max = 40000000\n' >"$work/node.toml"
  taskset -c 0 "$bin" serve --config "$work/node.toml" --data-dir "$work/data" \
    >"$work/node.out" 2>"$work/node.err" &
  started "$!"
  wait_line "$work/node.out" '^ready' "$work/node.err"
  addr=$(sed -n 's/^listening on //p' "$work/node.out")
  put_bench_skus "$addr"
  HOT_SKU=1 taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency -s scripts/bench/reserve.lua \
    "http://$addr" >"$work/wrk.out"
  rps=$(sed -n 's/^Requests\/sec: *//p' "$work/wrk.out")
  p50=$(awk '$1=="50%"{print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%"{print $2}' "$work/wrk.out")
  printf '%s %s %s %s\n' "$bin" "$rps" "$p50" "$p99" | tee -a "$results"
  stop_started
  rm -rf "$work"
done
python3 - "$results" <<'PY'
import statistics, sys
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
runs = {}
for line in open(sys.argv[1]):
    b, rps, p50, p99 = line.split()
    runs.setdefault(b, []).append((float(rps), ms(p50), ms(p99)))
print("\nmedians (server on CPU 0, wrk on CPU 1, one hot SKU, fsync)")
for b, rs in runs.items():
    med = lambda i: statistics.median(r[i] for r in rs)
    print(f"  {b}: {len(rs)} runs, {med(0):,.0f} req/s, p50 {med(1):.2f} ms, p99 {med(2):.2f} ms")
PY
