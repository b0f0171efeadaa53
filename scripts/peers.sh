#!/usr/bin/env bash
# stampede and its peers, in one run under one load tool (issue 30): every
# server pinned to CPU 0, the load (wrk -t1, or pgbench -j1) on CPU 1, over
# loopback, one hot SKU, CONNECTIONS connections, SECONDS each:
#
#   trivial        a trivial hyper handler (examples/hello.rs): the ceiling
#   reserve        stampede POST /v1/reservations, wal.durability = "fsync"
#   sold_out       the same, the SKU sold out: the 409 fast path
#   batch          stampede POST /v1/batch, 1000 reserve ops a request, 8
#                  connections (reservations/s from the holds it made)
#   redis_store    stampede on the redis store (one node, one redis-server,
#                  appendfsync always)
#   lua_fsync      the same reservation as a Redis Lua script behind the
#                  same hyper front (examples/redis_lua.rs), appendfsync always
#   lua_nofsync    the same, no persistence
#   postgres       Postgres: a conditional UPDATE of the SKU's row and an
#                  INSERT of the hold in one statement
#                  (scripts/bench/pg-reserve.sql), synchronous_commit on,
#                  pgbench on a private data directory
#
#   scripts/peers.sh [SECONDS] [CONNECTIONS]     (defaults 10, 64)
#
# Installs wrk, redis-server and postgresql when missing (apt-get, as root).
# Prints each run, then a table with each row against stampede reserve.
# Not part of scripts/test.sh: its figures go in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs="${1:-10}"
conns="${2:-64}"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
[ -n "$pgbin" ] && [ -x "$pgbin/pgbench" ] || need+=(postgresql postgresql-contrib)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]}..." >&2
  apt-get install -y "${need[@]}" >/dev/null
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs (servers on 0, load on 1)" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --bin stampede --example hello --example redis_lua >/dev/null 2>&1
work=$(mktemp -d)
chmod 755 "$work"
trap 'stop_started; [ -n "${pgdata:-}" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true' EXIT
server="taskset -c 0"
load="taskset -c 1"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # start NAME COMMAND...: prints the address it listens on
  local name="$1"; shift
  $server "$@" >"$work/$name.out" 2>"$work/$name.err" &
  started "$!"
  wait_line "$work/$name.out" '^listening on ' "$work/$name.err"
  sed -n 's/^listening on //p' "$work/$name.out"
}

start_redis() { # start_redis NAME [ARGS...]: prints its port
  local name="$1"; shift
  local port
  port=$(free_port)
  mkdir -p "$work/$name"
  $server redis-server --bind 127.0.0.1 --port "$port" --dir "$work/$name" --save '' "$@" \
    --daemonize no >"$work/$name.log" 2>&1 &
  started "$!"
  for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  echo "$port"
}

start_stampede() { # start_stampede NAME [TOML LINES...]: prints its address
  local name="$1"; shift
  printf '%s\n' "[admin]" 'listen = ""' "[wal]" 'durability = "fsync"' "[holds]" \
    "retained_max = 40000000" "$@" >"$work/$name.toml"
  local addr
  addr=$(start "$name" target/release/stampede serve --listen 127.0.0.1:0 \
    --data-dir "$work/$name-data" --config "$work/$name.toml")
  wait_line "$work/$name.out" '^ready' "$work/$name.err"
  put_bench_skus "$addr"
  echo "$addr"
}

declare -A rps p50 p99
wrk_run() { # wrk_run LABEL SCRIPT ADDR CONNS
  local label="$1" script="$2" addr="$3" c="$4"
  echo "== $label: wrk -t1 -c$c -d${secs}s, ${script##*/}"
  HOT_SKU=1 $load wrk -t1 -c"$c" -d"${secs}s" --latency -s "$script" "http://$addr" | tee "$work/$label.wrk"
  rps[$label]=$(sed -n 's/^Requests\/sec: *//p' "$work/$label.wrk")
  p50[$label]=$(awk '$1=="50%"{print $2}' "$work/$label.wrk")
  p99[$label]=$(awk '$1=="99%"{print $2}' "$work/$label.wrk")
}

held() { # held ADDR: active holds the server reports
  curl -sf "http://$1/v1/stats" | python3 -c 'import json,sys; print(sum(s["active_holds"] for s in json.load(sys.stdin)["shards"]))'
}

# 1-3: the trivial handler, stampede reserve, the sold-out fast path.
hello=$(start hello target/release/examples/hello 127.0.0.1:0)
wrk_run trivial scripts/bench/reserve.lua "$hello" "$conns"
reserve=$(start_stampede reserve)
wrk_run reserve scripts/bench/reserve.lua "$reserve" "$conns"
sold=$(start_stampede sold_out)
curl -sf -X PUT "http://$sold/v1/skus/sku-000000" -H 'Content-Type: application/json' \
  -d '{"stock":0}' >/dev/null
wrk_run sold_out scripts/bench/reserve.lua "$sold" "$conns"
stop_started; work=$(mktemp -d); chmod 755 "$work"

# 4: batch, counted from the holds it made.
batch=$(start_stampede batch)
before=$(held "$batch"); t0=$(date +%s.%N)
wrk_run batch scripts/bench/batch.lua "$batch" 8
t1=$(date +%s.%N); after=$(held "$batch")
batch_rps=$(python3 -c "print(f'{($after - $before) / ($t1 - $t0):.0f}')")
stop_started; work=$(mktemp -d); chmod 755 "$work"

# 5: the redis store, one node.
port=$(start_redis redis_store --appendonly yes --appendfsync always)
store=$(start_stampede redis_store "[store]" 'kind = "redis"' "[store.redis]" \
  "url = \"redis://127.0.0.1:$port\"")
wrk_run redis_store scripts/bench/reserve.lua "$store" "$conns"
stop_started; work=$(mktemp -d); chmod 755 "$work"

# 6-7: Redis + Lua behind the same hyper front, with and without fsync.
port=$(start_redis lua_fsync --appendonly yes --appendfsync always)
lua=$(start lua_fsync target/release/examples/redis_lua 127.0.0.1:0 "redis://127.0.0.1:$port" 10000)
wrk_run lua_fsync scripts/bench/reserve.lua "$lua" "$conns"
stop_started; work=$(mktemp -d); chmod 755 "$work"
port=$(start_redis lua_nofsync --appendonly no)
lua=$(start lua_nofsync target/release/examples/redis_lua 127.0.0.1:0 "redis://127.0.0.1:$port" 10000)
wrk_run lua_nofsync scripts/bench/reserve.lua "$lua" "$conns"
stop_started; work=$(mktemp -d); chmod 755 "$work"

# 8: Postgres on a private data directory, pgbench.
pgdata="$work/pg"
pgport=$(free_port)
mkdir -p "$pgdata" && chown postgres "$pgdata"
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust >/dev/null
runuser -u postgres -- $server "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/log" -w \
  -o "-p $pgport -k $pgdata -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c max_connections=200" start >/dev/null
psql() { runuser -u postgres -- "$pgbin/psql" -h "$pgdata" -p "$pgport" -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "CREATE DATABASE bench"
psql -d bench -c "CREATE TABLE skus (sku text PRIMARY KEY, stock bigint NOT NULL, held bigint NOT NULL DEFAULT 0, sold bigint NOT NULL DEFAULT 0, CHECK (held + sold <= stock));
  CREATE TABLE holds (id bigserial PRIMARY KEY, sku text NOT NULL REFERENCES skus, customer bigint NOT NULL, qty int NOT NULL, expires_at timestamptz NOT NULL);
  INSERT INTO skus SELECT 'sku-' || lpad(n::text, 6, '0'), 1000000000 FROM generate_series(0, 9999) n;"
cp scripts/bench/pg-reserve.sql "$work/pg-reserve.sql" && chmod 644 "$work/pg-reserve.sql"
echo "== postgres: pgbench -c$conns -j1 -T$secs, pg-reserve.sql"
runuser -u postgres -- $load "$pgbin/pgbench" -h "$pgdata" -p "$pgport" -n -M prepared -c "$conns" -j 1 \
  -T "$secs" -f "$work/pg-reserve.sql" bench | tee "$work/pg.out"
rps[postgres]=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pg.out" | head -1)
lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$work/pg.out")
p50[postgres]="avg ${lat}ms"; p99[postgres]="-"
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null; pgdata=

python3 - "$secs" "$conns" "$batch_rps" <<PY
import sys
secs, conns, batch = sys.argv[1:]
rows = [
  ("trivial hyper handler (1 thread)", "trivial"),
  ("stampede reserve, fsync", "reserve"),
  ("stampede sold-out answers (409 fast path)", "sold_out"),
  ("stampede on the redis store, one node (appendfsync always)", "redis_store"),
  ("Redis + Lua, appendfsync always", "lua_fsync"),
  ("Redis + Lua, no persistence", "lua_nofsync"),
  ("Postgres: conditional UPDATE + INSERT, synchronous commit (pgbench)", "postgres"),
]
rps = {k: float(v) for k, v in (
  ("trivial", "${rps[trivial]}"), ("reserve", "${rps[reserve]}"), ("sold_out", "${rps[sold_out]}"),
  ("redis_store", "${rps[redis_store]}"), ("lua_fsync", "${rps[lua_fsync]}"),
  ("lua_nofsync", "${rps[lua_nofsync]}"), ("postgres", "${rps[postgres]}"))}
lat = {
  "trivial": ("${p50[trivial]}", "${p99[trivial]}"), "reserve": ("${p50[reserve]}", "${p99[reserve]}"),
  "sold_out": ("${p50[sold_out]}", "${p99[sold_out]}"), "redis_store": ("${p50[redis_store]}", "${p99[redis_store]}"),
  "lua_fsync": ("${p50[lua_fsync]}", "${p99[lua_fsync]}"), "lua_nofsync": ("${p50[lua_nofsync]}", "${p99[lua_nofsync]}"),
  "postgres": ("${p50[postgres]}", "${p99[postgres]}"),
}
st = rps["reserve"]
print()
print(f"peers, one run: servers on CPU 0, load on CPU 1, one hot SKU, {conns} connections, {secs} s each")
print("| system | per second | p50 | p99 | stampede reserve against it |")
print("|---|---|---|---|---|")
for name, k in rows:
    ratio = "-" if k == "reserve" else f"{st / rps[k]:.2f}x"
    print(f"| {name} | {rps[k]:,.0f} | {lat[k][0]} | {lat[k][1]} | {ratio} |")
print(f"| stampede /v1/batch (1000 ops a request, 8 connections), reservations held | {float(batch):,.0f} | - | - | - |")
PY
