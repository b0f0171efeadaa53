# Shared by the bench and rehearsal scripts: source it.

# wait_line FILE REGEX [ERR_FILE]: waits (up to 10 s) for a line of FILE
# matching REGEX (a server's "ready" or "listening on" line); if none
# comes, prints ERR_FILE (the server's stderr) and exits 1.
wait_line() {
  for _ in $(seq 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "no line matching '$2' in $1 within 10 s" >&2
  [ -n "${3:-}" ] && cat "$3" >&2
  exit 1
}

# started PID: remembers a process the script started, one pid a line in
# "$work/pids" (a file: processes started inside command substitutions
# count too, whose variables never reach the script's shell).
started() { echo "$1" >>"$work/pids"; }

# stop_started: TERM every started process, KILL what is left a second
# later, remove "$work". For `trap stop_started EXIT`.
stop_started() {
  local p
  if [ -f "$work/pids" ]; then
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
    sleep 1
    while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
  fi
  rm -rf "$work"
}

# start_cluster N [CPU]: N durable Redis Cluster primaries (appendonly,
# appendfsync always) in "$work", pinned to CPU if given, each `started`;
# with REPLICAS=R, R replicas for each; waits for cluster_state:ok (and
# every replica online) and prints the redis-cluster:// URL.
start_cluster() {
  local seeds=() i port pin=() replicas="${REPLICAS:-0}"
  [ -n "${2:-}" ] && pin=(taskset -c "$2")
  for i in $(seq $(( $1 * (1 + replicas) ))); do
    port=$(cluster_port)
    mkdir -p "$work/cluster-$i"
    "${pin[@]}" redis-server --bind 127.0.0.1 --port "$port" --dir "$work/cluster-$i" --save '' \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --appendonly yes --appendfsync always --daemonize no >"$work/cluster-$i.log" 2>&1 &
    started "$!"
    for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    seeds+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas "$replicas" --cluster-yes >"$work/cluster-create.log" 2>&1 ||
    { echo "redis-cli --cluster create failed: $(cat "$work/cluster-create.log")" >&2; exit 1; }
  for s in "${seeds[@]}"; do
    for _ in $(seq 200); do
      redis-cli -p "${s#*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break; sleep 0.1
    done
  done
  if [ "$replicas" -gt 0 ]; then
    for s in "${seeds[@]}"; do
      for _ in $(seq 300); do
        local info
        info=$(redis-cli -p "${s#*:}" info replication 2>/dev/null)
        if echo "$info" | grep -q '^role:master'; then
          [ "$(echo "$info" | grep -c 'state=online')" -ge "$replicas" ] && break
        else
          echo "$info" | grep -q 'master_link_status:up' && break
        fi
        sleep 0.1
      done
    done
  fi
  echo "redis-cluster://$(IFS=,; echo "${seeds[*]}")"
}

# A free loopback port for a Redis Cluster node: below 55536, since the
# node also listens on port + 10000 (its cluster bus), which must be free too.
cluster_port() {
  python3 - <<'PY'
import random, socket
while True:
    p = random.randint(20000, 55000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
    except OSError:
        continue
    print(p)
    break
PY
}

# put_bench_skus ADDR: the 10k SKUs scripts/bench/reserve.lua draws from
# (sku-000000 .. sku-009999, a billion units each), on the server at ADDR.
put_bench_skus() {
  python3 - "$1" <<'PY'
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
for n in range(10000):
    c.request("PUT", f"/v1/skus/sku-{n:06d}", body=b'{"stock":1000000000}',
              headers={"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status in (200, 201), r.status
PY
}
