#!/usr/bin/env bash
# What a hold across slots (a saga) costs when each of its steps waits for
# its primary's replicas (issue 25, item 4), builds alternated: for each
# BIN in turn, a fresh 3-primary Redis Cluster with one replica each
# (durable: appendonly, appendfsync always), one stampede node BIN on it,
# two SKUs on two different primaries, then N (default 2000) reservations
# of both, one after another on one keep-alive connection, each released.
# Prints the reservations' latency (p50, p90, p99 in ms) per run.
#
#   N=2000 scripts/saga-wait-bench.sh OLD_BIN NEW_BIN OLD_BIN NEW_BIN
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ "$#" -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
trap '[ -n "${work:-}" ] && stop_started' EXIT
for bin in "$@"; do
  work=$(mktemp -d)
  url=$(REPLICAS=1 start_cluster 3)
  cat >"$work/node.toml" <<TOML
[store]
kind = "redis"
[store.redis]
url = "$url"
TOML
  "$bin" serve --config "$work/node.toml" --listen 127.0.0.1:0 --admin-listen "" \
    --data-dir "$work/data" >"$work/out" 2>"$work/err" &
  started "$!"
  wait_line "$work/out" '^ready' "$work/err"
  addr=$(sed -n 's/^listening on //p' "$work/out")
  python3 - "$addr" "${N:-2000}" "$bin" <<'PY'
import http.client, json, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, name = int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection(host, int(port))
def call(method, path, body=None):
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, r.read()
# Two SKUs whose slots sit on different primaries: the cluster splits the
# slots in three, so names are tried until two land in different thirds.
def slot(key):
    crc = 0
    for b in key.encode():
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384
a = "saga-a"
b = next(f"saga-b-{i}" for i in range(1000) if slot(f"saga-b-{i}") // 5462 != slot(a) // 5462)
for sku in (a, b):
    assert call("PUT", f"/v1/skus/{sku}", {"stock": 10 * n})[0] == 201
# Until the fresh replicas acknowledge.
for _ in range(100):
    s, body = call("POST", "/v1/reservations", {"customer_id": "warm", "items": [{"sku": a, "qty": 1}, {"sku": b, "qty": 1}]})
    if s == 201:
        break
    time.sleep(0.2)
took, refused = [], 0
for i in range(n):
    t = time.perf_counter()
    s, body = call("POST", "/v1/reservations", {"customer_id": f"c{i}", "items": [{"sku": a, "qty": 1}, {"sku": b, "qty": 1}]})
    took.append((time.perf_counter() - t) * 1000)
    if s != 201:
        refused += 1
        continue
    call("POST", f"/v1/reservations/{json.loads(body)['id']}/release")
took.sort()
q = lambda p: took[min(len(took) - 1, int(p * len(took)))]
print(f"{name}: {n} holds across slots, p50 {q(0.5):.2f} ms, p90 {q(0.9):.2f} ms, p99 {q(0.99):.2f} ms, {refused} refused")
PY
  stop_started
  work=
done
