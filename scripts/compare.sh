#!/usr/bin/env bash
# One scenario, three targets (BENCHMARKS.md, issue 6): the same
# stampede-loadgen scenario against stampede over HTTP (default config:
# wal.durability = fsync), against Redis driven directly with Lua scripts
# (redis-server with appendonly yes, appendfsync always, on its own port and
# directory), and against the engine in-process, one after another on this
# machine (server and generator share its cores). Prints each report's
# latency table and audit line.
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
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
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
for target in "http://$addr" "redis://127.0.0.1:$redis_port" inproc; do
  echo "== $target"
  STAMPEDE_LOADGEN_KEY="$key" target/release/stampede-loadgen --scenario "$work/cmp.toml" \
    --target "$target" --quiet | grep -E "^shoppers|^ +(reserve|confirm|release) |^audit"
done
