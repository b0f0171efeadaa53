#!/usr/bin/env bash
# One scenario, every target (BENCHMARKS.md, issues 6 and 14): the same
# stampede-loadgen scenario against stampede over HTTP on the embedded
# store (default config: wal.durability = fsync), stampede on the redis
# store with one node and with two nodes (requests taken in turn), the
# same on a 3-primary Redis Cluster (one node, two nodes, one node with
# the four hottest SKUs in 8 stock buckets each), Redis driven
# directly with Lua scripts (the usual design), and the engine in-process, one after another on this machine (servers and generator
# share its cores). Every redis-server runs appendonly yes, appendfsync
# always, on its own port and directory. Prints each report's latency
# table and audit line.
#
#   scripts/compare.sh [RATE] [SECS]      (defaults 10000 shoppers/s, 5 s)
#
# The scenario: 1000 SKUs (zipf 1.1, ample stock); each shopper reserves
# one unit, then confirms (60%) or releases (20%) with no think time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rate="${1:-10000}"
secs="${2:-5}"
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install -y redis-server" >&2; exit 1; }
cargo build --release -p stampede --bin stampede >&2
cargo build --release -p loadgen >&2
work="$(mktemp -d)"
pids=()
# Nodes start inside command substitutions, whose variables do not reach
# this shell: their pids go to a file.
cleanup() {
  for p in "${pids[@]}" $(cat "$work/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null; sleep 0.5; rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/cmp.toml" <<TOML
name = "compare"
[[phases]]
name = "steady"
duration_s = $secs
rate = $rate
[catalog]
skus = 1000
stock = 1000000
popularity = "zipf"
zipf_exponent = 1.1
[flow]
browse = 0.0
confirm = 0.6
release = 0.2
think_ms = 0
[client]
connections = 256
TOML
key="cmp-admin-key-$RANDOM$RANDOM"
printf '[server]\nlisten = "127.0.0.1:0"\n' > "$work/server.toml"
STAMPEDE_ADMIN_KEYS="$key" target/release/stampede serve --config "$work/server.toml" \
  --data-dir "$work/data" >"$work/stampede.out" 2>"$work/stampede.err" &
pids+=("$!")
wait_line "$work/stampede.out" '^ready' "$work/stampede.err"
addr=$(sed -n 's/^listening on //p' "$work/stampede.out")
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$work/redis" --save '' \
  --appendonly yes --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 200); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
echo "$(date -u +%FT%TZ), $(nproc) vCPUs: $rate shoppers/s for ${secs}s"
# The redis store: its own redis-server; each run its own key prefix.
store_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/store-redis"
redis-server --bind 127.0.0.1 --port "$store_port" --dir "$work/store-redis" --save '' \
  --appendonly yes --appendfsync always --daemonize no >"$work/store-redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 200); do redis-cli -p "$store_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
node() { # node NAME PREFIX: prints the address of a stampede node on the redis store
  printf '[server]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = ""\n[store]\nkind = "redis"\n[store.redis]\nurl = "redis://127.0.0.1:%s"\nkey_prefix = "%s"\n' \
    "$store_port" "$2" > "$work/$1.toml"
  STAMPEDE_ADMIN_KEYS="$key" target/release/stampede serve --config "$work/$1.toml" \
    --data-dir "$work/$1-data" >"$work/$1.out" 2>"$work/$1.err" &
  echo "$!" >>"$work/pids"
  wait_line "$work/$1.out" '^ready' "$work/$1.err"
  sed -n 's/^listening on //p' "$work/$1.out"
}
one=$(node one p1)
two_a=$(node two-a p2)
two_b=$(node two-b p2)
# A 3-primary Redis Cluster (no replicas), durable like the others.
cluster_url=$(start_cluster 3)
cluster_node() { # cluster_node NAME PREFIX [TOML...]: a stampede node on the cluster
  printf '[server]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = ""\n[store]\nkind = "redis"\n[store.redis]\nurl = "%s"\nkey_prefix = "%s"\n' \
    "$cluster_url" "$2" > "$work/$1.toml"
  local name="$1"; shift 2
  [ "$#" -eq 0 ] || printf '%s\n' "$@" >> "$work/$name.toml"
  set -- "$name"
  STAMPEDE_ADMIN_KEYS="$key" target/release/stampede serve --config "$work/$1.toml" \
    --data-dir "$work/$1-data" >"$work/$1.out" 2>"$work/$1.err" &
  echo "$!" >>"$work/pids"
  wait_line "$work/$1.out" '^ready' "$work/$1.err"
  sed -n 's/^listening on //p' "$work/$1.out"
}
c_one=$(cluster_node c-one c1)
c_two_a=$(cluster_node c-two-a c2)
c_two_b=$(cluster_node c-two-b c2)
# The four hottest SKUs of the zipf catalogue over 8 stock buckets each.
c_buckets=$(cluster_node c-buckets c3 "[store.redis.buckets]" \
  '"sku-000000" = 8' '"sku-000001" = 8' '"sku-000002" = 8' '"sku-000003" = 8')
for target in "http://$addr" "http://$one" "http://$two_a,$two_b" "http://$c_one" "http://$c_two_a,$c_two_b" "http://$c_buckets" "redis://127.0.0.1:$redis_port" inproc; do
  case "$target" in
    "http://$addr") echo "== stampede, embedded store: $target" ;;
    "http://$one") echo "== stampede, redis store, 1 node: $target" ;;
    "http://$two_a,$two_b") echo "== stampede, redis store, 2 nodes: $target" ;;
    "http://$c_one") echo "== stampede, redis store on a 3-primary cluster, 1 node: $target" ;;
    "http://$c_two_a,$c_two_b") echo "== stampede, redis store on a 3-primary cluster, 2 nodes: $target" ;;
    "http://$c_buckets") echo "== stampede, redis store on a 3-primary cluster, 1 node, 4 hottest SKUs in 8 buckets: $target" ;;
    redis://*) echo "== Redis + Lua directly: $target" ;;
    *) echo "== the engine in-process: $target" ;;
  esac
  STAMPEDE_LOADGEN_KEY="$key" target/release/stampede-loadgen --scenario "$work/cmp.toml" \
    --target "$target" --quiet | grep -E "^shoppers|^ +(reserve|confirm|release) |^audit"
done
