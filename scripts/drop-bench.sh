#!/usr/bin/env bash
# A drop at scale: ENTRANTS customers (default 100000) join one drop's
# pre-queue over HTTP (the load generator, 64 joins in flight), then it
# opens. Measures, in one run on a fresh server (wal.durability = fsync):
#   - entry-join throughput over HTTP (joins a second) and its latency;
#   - memory per entrant: the server's resident memory after the joins
#     minus before the drop, over ENTRANTS;
#   - the shuffle at the opening (HMAC of every entrant, sort), as the
#     server reports it;
# Join throughput has a same-run baseline: wrk (1 thread, 64 connections,
# 5 s) alternates joins of a drop (scripts/bench/join.lua) with plain
# reservations of one SKU (scripts/bench/reserve.lua), twice each.
#
# STORE=redis: the same on the redis store, one node on a durable
# redis-server (appendfsync always) started here on a free port; memory is
# then the node's alone (its book), not Redis's.
#
#   [STORE=redis] scripts/drop-bench.sh [ENTRANTS]
set -euo pipefail
cd "$(dirname "$0")/.."
entrants="${1:-100000}"
store="${STORE:-embedded}"
. scripts/lib.sh
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p stampede -p loadgen
work="$(mktemp -d)"
trap stop_started EXIT
config=()
if [ "$store" = redis ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/redis"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$work/redis" --save '' \
    --appendonly yes --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
  started "$!"
  for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  printf '[store]\nkind = "redis"\n[store.redis]\nurl = "redis://127.0.0.1:%s"\n' "$port" >"$work/store.toml"
  config=(--config "$work/store.toml")
fi
target/release/stampede serve --listen 127.0.0.1:0 --data-dir "$work/data" --admin-listen "" "${config[@]}" \
  >"$work/out" 2>"$work/err" &
pid=$!
started "$pid"
wait_line "$work/out" '^ready' "$work/err"
addr=$(sed -n 's/^listening on //p' "$work/out")
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
api() { curl -sf -X "$1" -H 'Content-Type: application/json' -d "$3" "http://$addr$2" >/dev/null; }
# The A/B first, on its own drop and SKU.
now_ms=$(date +%s%3N)
api PUT /v1/skus/sku-000000 '{"stock": 1000000000}'
api PUT /v1/drops/ab "{\"skus\": [\"ab-1\"], \"prequeue_opens_at_ms\": $now_ms, \"opens_at_ms\": $((now_ms + 3600000))}"
ab=""
for round in 1 2; do
  for what in join reserve; do
    out=$(HOT_SKU=1 wrk -t1 -c64 -d5s -s "scripts/bench/$what.lua" "http://$addr" 2>&1)
    rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    lat=$(echo "$out" | grep '^p50')
    ab+="round $round: $what $rate req/s ($lat)"$'\n'
  done
done
before_kb=$(rss)
# The shipped drop scenario with ENTRANTS customers and an opening far
# enough ahead for the joins.
# (On the redis store joins are slower: more time before the opening.)
per_s=4000; [ "$store" = redis ] && per_s=1500
prequeue_s=$(( entrants / per_s + 10 ))
sed -e "s/^count = .*/count = $entrants/" -e "s/^prequeue_s = .*/prequeue_s = $prequeue_s/" \
  configs/scenarios/drop.toml >"$work/drop.toml"
target/release/stampede-loadgen --scenario "$work/drop.toml" --target "http://$addr" \
  --quiet --out "$work/run" >"$work/report" 2>"$work/progress" &
lg=$!
started "$lg"
# Resident memory once every join is answered (before the opening).
wait_line_long() { for _ in $(seq 2400); do grep -q "$2" "$1" && return 0; sleep 0.05; done; cat "$1" >&2; exit 1; }
wait_line_long "$work/progress" "waiting for the opening"
after_kb=$(rss)
wait "$lg" || { cat "$work/progress" "$work/report" >&2; exit 1; }
echo "== $(date -u +%F) $(nproc) cores, $entrants entrants, $store store, durability fsync"
printf "%s" "$ab"
grep "joined" "$work/progress"
grep "opened:" "$work/err"
awk -v b="$before_kb" -v a="$after_kb" -v n="$entrants" \
  'BEGIN { printf "memory: RSS %d kB before, %d kB after the joins: %.0f bytes per entrant\n", b, a, (a - b) * 1024 / n }'
cat "$work/report"
