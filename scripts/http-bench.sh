#!/usr/bin/env bash
# Issue 13's HTTP goals, all in one run, measured the way outside programs
# will: every server pinned to CPU 0 and wrk (1 thread, CONNECTIONS
# connections) to CPU 1, over loopback, one hot SKU.
#
#   1. a trivial hyper handler (examples/hello.rs): the baseline;
#   2. stampede POST /v1/reservations, wal.durability = "fsync";
#   3. the same with server.metrics = false (what counting costs);
#   4. the same reservation as a Redis Lua script behind the same hyper
#      front (examples/redis_lua.rs; redis-server on its own port and
#      directory, appendfsync always so it is as durable as stampede);
#   5. stampede POST /v1/batch, 1000 reserve ops a request, 8 connections,
#      counted from the holds the server holds after the run.
#
#   scripts/http-bench.sh [SECONDS] [CONNECTIONS]     (defaults 10, 64)
#
# Prints each wrk report, then a summary with the ratios the goals name.
# Needs wrk and redis-server (apt-get install -y wrk redis-server) and two
# CPUs. Loopback only; everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs="${1:-10}"
conns="${2:-64}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install -y redis-server" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs (server on 0, wrk on 1)" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --bin stampede --example hello --example redis_lua >/dev/null 2>&1
work="$(mktemp -d)"
# Every process started, one pid a line (a file: `start` runs in a
# command substitution, whose variables do not reach this shell).
touch "$work/pids"
cleanup() {
  local p
  while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
  # A stampede holding millions of holds writes its checkpoint on the way
  # out; 30 s, then it is killed.
  for _ in $(seq 600); do
    local alive=0
    while read -r p; do kill -0 "$p" 2>/dev/null && alive=1; done <"$work/pids"
    [ "$alive" = 0 ] && break
    sleep 0.05
  done
  while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
  rm -rf "$work"
}
trap cleanup EXIT
server_cpu="taskset -c 0"
load_cpu="taskset -c 1"

start() { # start NAME COMMAND...: prints the address it listens on
  local name="$1"; shift
  $server_cpu "$@" >"$work/$name.out" 2>"$work/$name.err" &
  echo "$!" >>"$work/pids"
  for _ in $(seq 200); do
    if grep -q '^listening on ' "$work/$name.out" 2>/dev/null; then
      sed -n 's/^listening on //p' "$work/$name.out"; return
    fi
    sleep 0.05
  done
  echo "$name did not start: $(cat "$work/$name.err")" >&2; exit 1
}

start_stampede() { # start_stampede NAME [TOML LINES...]
  local name="$1"; shift
  # retained_max: the batch line holds about ten million reservations in
  # ten seconds at the goal's rate; the default (10M) would refuse the rest.
  printf '%s\n' "[wal]" 'durability = "fsync"' "[holds]" "retained_max = 40000000" "$@" >"$work/$name.toml"
  local addr
  addr=$(start "$name" target/release/stampede serve --listen 127.0.0.1:0 \
    --data-dir "$work/$name-data" --config "$work/$name.toml")
  for _ in $(seq 200); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.05; done
  put_bench_skus "$addr"
  echo "$addr"
}

held() { # held ADDR: active holds the server reports
  curl -sf "http://$1/v1/stats" | python3 -c 'import json,sys; print(sum(s["active_holds"] for s in json.load(sys.stdin)["shards"]))'
}

declare -A rps p99
run() { # run LABEL SCRIPT ADDR CONNS
  local label="$1" script="$2" addr="$3" c="$4"
  echo "== $label: wrk -t1 -c$c -d${secs}s, ${script##*/}"
  HOT_SKU=1 $load_cpu wrk -t1 -c"$c" -d"${secs}s" --latency -s "$script" "http://$addr" | tee "$work/$label.wrk"
  rps[$label]=$(sed -n 's/^Requests\/sec: *//p' "$work/$label.wrk")
  p99[$label]=$(awk '$1=="99%"{print $2}' "$work/$label.wrk")
}

hello=$(start hello target/release/examples/hello 127.0.0.1:0)
stampede=$(start_stampede stampede)
quiet=$(start_stampede quiet "[server]" "metrics = false")
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/redis"
$server_cpu redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$work/redis" --save '' \
  --appendonly yes --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
echo "$!" >>"$work/pids"
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis_lua=$(start redis_lua target/release/examples/redis_lua 127.0.0.1:0 "redis://127.0.0.1:$redis_port" 10000)

run hello scripts/bench/reserve.lua "$hello" "$conns"
run stampede scripts/bench/reserve.lua "$stampede" "$conns"
run stampede_metrics_off scripts/bench/reserve.lua "$quiet" "$conns"
run redis_lua scripts/bench/reserve.lua "$redis_lua" "$conns"
redis-cli -p "$redis_port" info persistence | grep -E 'aof_enabled|aof_last_write_status' | tr -d '\r'
before=$(held "$stampede")
started=$(date +%s.%N)
run batch scripts/bench/batch.lua "$stampede" 8
ended=$(date +%s.%N)
after=$(held "$stampede")

python3 - "$secs" "$before" "$after" "$started" "$ended" \
  "${rps[hello]}" "${rps[stampede]}" "${rps[stampede_metrics_off]}" "${rps[redis_lua]}" \
  "${p99[stampede]}" "${p99[stampede_metrics_off]}" <<'PY'
import sys
secs, before, after, t0, t1, hello, st, quiet, lua, p99, p99q = sys.argv[1:]
hello, st, quiet, lua = map(float, (hello, st, quiet, lua))
held = int(after) - int(before)
wall = float(t1) - float(t0)
print()
print("summary (one run; server on CPU 0, wrk on CPU 1, one hot SKU, fsync)")
print(f"  trivial handler              {hello:>10,.0f} req/s")
print(f"  stampede reservations        {st:>10,.0f} req/s  p99 {p99:>8}  {st/hello:.2f}x trivial (goal >= 0.80)  {st/lua:.2f}x Redis+Lua (goal >= 2)")
print(f"  same, server.metrics = false {quiet:>10,.0f} req/s  p99 {p99q:>8}  metrics on/off {st/quiet:.2f}")
print(f"  Redis + Lua, appendfsync     {lua:>10,.0f} req/s")
print(f"  /v1/batch                    {held:>10,} holds made in {wall:.1f} s of wrk = {held/wall:,.0f} reservations/s held (goal >= 1,000,000)")
PY
