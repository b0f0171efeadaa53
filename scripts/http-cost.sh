#!/usr/bin/env bash
# Where a reservation's time goes, per request: instructions (callgrind,
# every thread of the server, counted over 1,000 and 3,000 sequential
# reservations on one keep-alive connection and subtracted, so start-up and
# the setup drop out) and CPU microseconds (user and system, from
# /proc/PID/stat, under wrk -t1 -c64 for 8 s with the server on CPU 0 and
# wrk on CPU 1, one hot SKU). For the trivial hyper handler, stampede with
# wal.durability = "none", stampede with "fsync", and "fsync" with
# server.metrics = false (what the per-request counting costs).
#
#   scripts/http-cost.sh [STAMPEDE_BINARY]     (default: this tree's release build)
#
# Needs valgrind and wrk. Callgrind counts repeat run to run for the same
# binary (timers and the sweeper add a few hundred a request); the CPU
# figures move with the machine. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --bin stampede --example hello >/dev/null 2>&1
bin="${1:-target/release/stampede}"
hello=target/release/examples/hello
work="$(mktemp -d)"
# Every process started is stopped at the end (scripts/lib.sh).
trap stop_started EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

config() { # config MODE: "none", "fsync", or "fsync-nometrics" (server.metrics = false)
  printf '[wal]\ndurability = "%s"\n' "${1%-nometrics}"
  if [ "${1%-nometrics}" != "$1" ]; then printf '[server]\nmetrics = false\n'; fi
}

instructions() { # instructions NAME N DURABILITY|hello: total instructions
  local name=$1 n=$2 mode=$3 port; port=$(free_port)
  local out="$work/cg.$name.$n"
  if [ "$mode" = hello ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" "$hello" "127.0.0.1:$port" >/dev/null 2>"$out.err" &
  else
    config "$mode" >"$work/$name.toml"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve --listen "127.0.0.1:$port" \
      --data-dir "$work/d-$name-$n" --config "$work/$name.toml" >/dev/null 2>"$out.err" &
  fi
  local vg=$!
  started "$vg"
  python3 scripts/bench/drive.py 127.0.0.1 "$port" "$n" "$mode"
  kill -TERM "$vg"; wait "$vg" || true
  sed -n 's/.*Collected : //p' "$out.err"
}

cpu() { # cpu NAME MODE: "req/s user_us sys_us" under load
  local name=$1 mode=$2 port; port=$(free_port)
  if [ "$mode" = hello ]; then
    taskset -c 0 "$hello" "127.0.0.1:$port" >/dev/null 2>&1 &
  else
    config "$mode" >"$work/$name.toml"
    taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/cpu-$name" \
      --config "$work/$name.toml" >/dev/null 2>&1 &
  fi
  local pid=$!
  started "$pid"
  python3 scripts/bench/drive.py 127.0.0.1 "$port" 0 "$mode"
  local u0 s0 u1 s1
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  HOT_SKU=1 taskset -c 1 wrk -t1 -c64 -d8s -s scripts/bench/reserve.lua "http://127.0.0.1:$port" >"$work/$name.wrk"
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" || true
  local reqs; reqs=$(awk '/requests in/{print $1}' "$work/$name.wrk")
  python3 -c "
tick = 1e6 / $(getconf CLK_TCK)
print('%.0f %.1f %.1f' % ($reqs / 8, ($u1 - $u0) * tick / $reqs, ($s1 - $s0) * tick / $reqs))"
}

printf '%-26s %14s %10s %12s %11s\n' target "instr/request" "req/s" "user us/req" "sys us/req"
for row in "trivial hyper handler:hello" "stampede, durability none:none" "stampede, durability fsync:fsync" "same, server.metrics=false:fsync-nometrics"; do
  label=${row%%:*}; mode=${row##*:}; name=${mode}
  a=$(instructions "$name" 1000 "$mode"); b=$(instructions "$name" 3000 "$mode")
  per=$(python3 -c "print(round((${b//,/} - ${a//,/}) / 2000))")
  read -r rps user sys < <(cpu "$name" "$mode")
  printf '%-26s %14s %10s %12s %11s\n' "$label" "$per" "$rps" "$user" "$sys"
done
