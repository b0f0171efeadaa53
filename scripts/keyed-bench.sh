#!/usr/bin/env bash
# Keyed against unkeyed reservations (wal.durability = fsync), for two
# stampede binaries in one run, alternated twice (A B A B) so a noisy
# machine hits both alike: throughput and p50/p99 from wrk, one
# connection per request stream, server pinned to CPU 0, wrk to CPU 1.
#
#   scripts/keyed-bench.sh BIN_A BIN_B [SECONDS=8] [CONNECTIONS=32]
#
# Needs wrk (apt-get install -y wrk). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
a="$1"; b="$2"; secs="${3:-8}"; conns="${4:-32}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
run() { # run LABEL BIN
  rm -rf "$work/data"
  taskset -c 0 "$2" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/err" &
  pid=$!
  wait_line "$work/out" '^ready' "$work/err"
  local addr; addr=$(sed -n 's/^listening on //p' "$work/out")
  curl -sf -X PUT -H 'content-type: application/json' -d '{"stock":1000000000}' "http://$addr/v1/skus/sku-hot" >/dev/null
  for script in reserve_hot reserve_keyed; do
    local out; out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s "scripts/bench/$script.lua" "http://$addr" 2>&1)
    printf '%-6s %-14s %8s req/s  %s\n' "$1" "$script" \
      "$(echo "$out" | sed -n 's/^Requests\/sec: *//p')" "$(echo "$out" | grep '^p50')"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
for round in 1 2; do
  run "A$round" "$a"
  run "B$round" "$b"
done
