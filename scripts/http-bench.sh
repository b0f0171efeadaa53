#!/usr/bin/env bash
# HTTP throughput of durable reservations (stampede serve, wal.durability =
# fsync) beside a trivial hyper handler (examples/hello.rs) and beside the
# same reservation as a Redis Lua script behind the same hyper front
# (examples/redis_lua.rs; redis-server with appendfsync always, on its own
# port and directory), all driven by wrk from this machine over loopback,
# in one run; then /v1/batch with 1000 reservations a request.
#
#   scripts/http-bench.sh [SECONDS] [CONNECTIONS]     (defaults 10, 64)
#
# Needs wrk (apt-get install wrk) and redis-server. Loopback only; everything it starts is
# stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conns="${2:-64}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install -y redis-server" >&2; exit 1; }
cargo build --release --bin stampede --example hello --example redis_lua >/dev/null 2>&1
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start() { # start NAME COMMAND...: prints the address it listens on
  local name="$1"; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=("$!")
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$work/$name.out" 2>/dev/null; then
      sed -n 's/^listening on //p' "$work/$name.out"; return
    fi
    sleep 0.05
  done
  echo "$name did not start" >&2; exit 1
}

hello=$(start hello target/release/examples/hello 127.0.0.1:0)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$work/redis" --save '' \
  --appendonly yes --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis_lua=$(start redis_lua target/release/examples/redis_lua 127.0.0.1:0 "redis://127.0.0.1:$redis_port" 10000)
stampede=$(start stampede target/release/stampede serve --listen 127.0.0.1:0 --data-dir "$work/data")
for _ in $(seq 200); do curl -sf "http://$stampede/readyz" >/dev/null && break; sleep 0.05; done
echo "setting up 10k SKUs..."
python3 - "$stampede" <<'PY'
import http.client, sys, threading
host, port = sys.argv[1].rsplit(":", 1)
def put(lo, hi):
    c = http.client.HTTPConnection(host, int(port))
    for n in range(lo, hi):
        c.request("PUT", f"/v1/skus/sku-{n:06d}", body=b'{"stock":1000000000}',
                  headers={"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status in (200, 201), r.status
threads = [threading.Thread(target=put, args=(i * 1250, (i + 1) * 1250)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
PY
echo "== trivial hyper handler (baseline), $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/bench/reserve.lua "http://$hello"
echo "== stampede POST /v1/reservations, fsync durability, $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/bench/reserve.lua "http://$stampede"
echo "== Redis+Lua POST /v1/reservations, appendfsync always, $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/bench/reserve.lua "http://$redis_lua"
redis-cli -p "$redis_port" info persistence | grep -E 'aof_enabled|aof_last_write_status' | tr -d '\r'
echo "== stampede POST /v1/batch (1000 reserve ops each), fsync durability, 8 connections, ${secs}s"
wrk -t2 -c8 -d"${secs}s" --latency -s scripts/bench/batch.lua "http://$stampede"
curl -s "http://$stampede/v1/stats" | head -c 600; echo
