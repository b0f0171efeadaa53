#!/usr/bin/env bash
# One hot SKU on each store (issue 14): POST /v1/reservations of one unit
# of sku-000000 by wrk on CPU 1 (-t1, CONNECTIONS connections, SECONDS s),
# every server and redis-server on CPU 0, loopback only:
#
#   1. stampede, embedded store (wal.durability = fsync);
#   2. stampede, redis store, one node (redis-server appendfsync always);
#   3. the same redis store with two nodes (two wrk, half the connections
#      each, run at once; their req/s summed);
#   3b. one node on a 3-primary Redis Cluster (its redis-servers on CPU 0
#      too), and the same with the hot SKU in 8 stock buckets;
#   4. Redis + Lua behind the same hyper front (examples/redis_lua.rs,
#      appendfsync always): the usual design;
#   5. the redis store's own reserve script on that hot SKU, straight from
#      redis-benchmark (no HTTP, no stampede): how many Lua calls a second
#      one Redis core makes.
#
#   scripts/redis-store-bench.sh [SECONDS] [CONNECTIONS]   (defaults 10, 64)
#
# Needs wrk, redis-server, redis-benchmark and two CPUs. Stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs="${1:-10}"
conns="${2:-64}"
for tool in wrk redis-server redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs (servers on 0, clients on 1)" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --bin stampede --example redis_lua >/dev/null 2>&1
work="$(mktemp -d)"
trap stop_started EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis() { # redis NAME: starts a durable redis-server on CPU 0, prints its port
  local port; port=$(free_port)
  mkdir -p "$work/$1"
  taskset -c 0 redis-server --bind 127.0.0.1 --port "$port" --dir "$work/$1" --save '' \
    --appendonly yes --appendfsync always --daemonize no >"$work/$1.log" 2>&1 &
  started "$!"
  for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  echo "$port"
}

stampede() { # stampede NAME [TOML LINES...]: prints its address, with sku-000000 set
  local name="$1"; shift
  printf '%s\n' "[admin]" 'listen = ""' "[holds]" "retained_max = 40000000" "$@" >"$work/$name.toml"
  taskset -c 0 target/release/stampede serve --listen 127.0.0.1:0 --data-dir "$work/$name-data" \
    --config "$work/$name.toml" >"$work/$name.out" 2>"$work/$name.err" &
  started "$!"
  for _ in $(seq 200); do grep -q '^ready' "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  grep -q '^ready' "$work/$name.out" || { echo "$name did not start: $(cat "$work/$name.err")" >&2; exit 1; }
  local addr; addr=$(sed -n 's/^listening on //p' "$work/$name.out")
  curl -sf -X PUT "http://$addr/v1/skus/sku-000000" -H 'Content-Type: application/json' \
    -d '{"stock":1000000000}' >/dev/null
  echo "$addr"
}

bench() { # bench LABEL CONNS ADDR...: req/s (summed over ADDRs, run at once)
  local label="$1" c="$2"; shift 2
  local i=0 a wrks=()
  for a in "$@"; do
    HOT_SKU=1 taskset -c 1 wrk -t1 -c"$c" -d"${secs}s" --latency -s scripts/bench/reserve.lua \
      "http://$a" >"$work/$label.$i.wrk" &
    wrks+=("$!")
    i=$((i + 1))
  done
  wait "${wrks[@]}"
  python3 - "$work" "$label" "$i" <<'PY'
import re, sys
work, label, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
total, p50, p99 = 0.0, [], []
for i in range(n):
    text = open(f"{work}/{label}.{i}.wrk").read()
    total += float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
    m = re.search(r"p50 (\d+) us, p99 (\d+) us", text)
    p50.append(int(m.group(1))); p99.append(int(m.group(2)))
print(f"{label:<34} {total:>10,.0f} req/s   p50 {max(p50):>6} us   p99 {max(p99):>7} us")
PY
}

store_port=$(redis store)
embedded=$(stampede embedded)
one=$(stampede one "[store]" 'kind = "redis"' "[store.redis]" "url = \"redis://127.0.0.1:$store_port\"" 'key_prefix = "one"')
two_a=$(stampede two-a "[store]" 'kind = "redis"' "[store.redis]" "url = \"redis://127.0.0.1:$store_port\"" 'key_prefix = "two"')
two_b=$(stampede two-b "[store]" 'kind = "redis"' "[store.redis]" "url = \"redis://127.0.0.1:$store_port\"" 'key_prefix = "two"')
# A 3-primary Redis Cluster on CPU 0, durable like the others.
cluster_url=$(start_cluster 3 0)
c_one=$(stampede c-one "[store]" 'kind = "redis"' "[store.redis]" "url = \"$cluster_url\"" 'key_prefix = "c1"')
c_buckets=$(stampede c-buckets "[store]" 'kind = "redis"' "[store.redis]" "url = \"$cluster_url\"" 'key_prefix = "c8"' \
  "[store.redis.buckets]" '"sku-000000" = 8')
lua_port=$(redis lua)
lua_addr_port=$(free_port)
taskset -c 0 target/release/examples/redis_lua "127.0.0.1:$lua_addr_port" "redis://127.0.0.1:$lua_port" 1 \
  >"$work/lua.out" 2>"$work/lua.err" &
started "$!"
for _ in $(seq 200); do grep -q '^listening' "$work/lua.out" 2>/dev/null && break; sleep 0.05; done

echo "$(date -u +%FT%TZ), $(nproc) vCPUs; one hot SKU; servers and redis-server on CPU 0, clients on CPU 1"
bench "stampede, embedded (fsync)" "$conns" "$embedded"
bench "stampede, redis store, 1 node" "$conns" "$one"
bench "stampede, redis store, 2 nodes" "$((conns / 2))" "$two_a" "$two_b"
bench "stampede, 3-primary cluster, 1 node" "$conns" "$c_one"
bench "stampede, cluster, 8 stock buckets" "$conns" "$c_buckets"
bench "Redis + Lua (hyper front)" "$conns" "127.0.0.1:$lua_addr_port"
# The store's reserve script alone: the SHA Redis gave it, one unit of the
# hot SKU a call, all calls with one hold id (the first holds; every other
# call finds it and answers its view: the read path of the script).
sha=$(redis-cli -p "$store_port" script load "$(python3 - <<'PY'
prelude = open("src/store/redis/scripts/prelude.lua").read()
reserve = open("src/store/redis/scripts/reserve.lua").read()
print(prelude + reserve)
PY
)")
echo "== the reserve script alone: redis-benchmark -c $conns on CPU 1 (new hold id each call via __rand_int__)"
taskset -c 1 redis-benchmark -p "$store_port" -c "$conns" -n 200000 -r 1000000000 -q \
  EVALSHA "$sha" 4 "one:{sku-000000}" "one:{sku-000000}:c" "one:{sku-000000}:h:bench-__rand_int__" "one:{sku-000000}:x" \
  one "bench-__rand_int__" c-bench 600000 a 1 1 sku-000000 3900000 "" | tr '\r' '\n' | grep -v '^$' | tail -1
