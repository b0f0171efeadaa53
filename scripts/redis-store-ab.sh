#!/usr/bin/env bash
# Two builds of stampede on the redis store, same scenario, alternated
# (BENCHMARKS.md, issue 14): for each BIN in turn, a fresh redis-server
# (appendonly yes, appendfsync always), one stampede node BIN on it, and
# stampede-loadgen at RATE shoppers/s for 5 s (1000 SKUs zipf 1.1, reserve
# then confirm 60% / release 20%). Prints each run's reserve latency line
# (count, p50, p90, p99, p99.9, max in ms) and the audit.
#
#   RATE=5000 scripts/redis-store-ab.sh OLD_BIN NEW_BIN OLD_BIN NEW_BIN
#
# CLUSTER=1: a fresh 3-primary Redis Cluster (durable alike) instead of
# one redis-server. EMBEDDED=1: no Redis, each node on the embedded store
# (its log on a fresh data dir, wal.durability = fsync), for changes that
# touch the engine or the log.
#
# Build an older tree with `git worktree add /tmp/old REV` and `cargo build
# --release --bin stampede` there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ "$#" -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
trap '[ -n "${work:-}" ] && stop_started' EXIT
cargo build --release -p loadgen >&2
for bin in "$@"; do
  work=$(mktemp -d)
  cat > "$work/cmp.toml" <<TOML
name = "ab"
[[phases]]
name = "steady"
duration_s = 5
rate = ${RATE:-5000}
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
  if [ -n "${EMBEDDED:-}" ]; then
    url=
  elif [ -n "${CLUSTER:-}" ]; then
    url=$(start_cluster 3)
  else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$port" --dir "$work" --save '' --appendonly yes \
      --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
    started "$!"
    for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    url="redis://127.0.0.1:$port"
  fi
  key="ab-admin-key-$RANDOM$RANDOM"
  printf '[server]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = ""\n' > "$work/node.toml"
  [ -n "$url" ] && printf '[store]\nkind = "redis"\n[store.redis]\nurl = "%s"\n' "$url" >> "$work/node.toml"
  STAMPEDE_ADMIN_KEYS="$key" "$bin" serve --config "$work/node.toml" --data-dir "$work/data" \
    >"$work/node.out" 2>"$work/node.err" &
  started "$!"
  wait_line "$work/node.out" '^ready' "$work/node.err"
  addr=$(sed -n 's/^listening on //p' "$work/node.out")
  echo "== $bin"
  STAMPEDE_LOADGEN_KEY="$key" target/release/stampede-loadgen --scenario "$work/cmp.toml" \
    --target "http://$addr" --quiet | grep -E "^ +reserve +[0-9]|^audit"
  stop_started
done
