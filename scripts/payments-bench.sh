#!/usr/bin/env bash
# Payments (issue 27), measured:
#
# 1. Confirmations per second through signed webhooks against direct
#    confirm, in one run: stampede (release, wal.durability = "fsync",
#    pinned to CPU 0) with a stripe gateway; HOLDS holds made with
#    /v1/batch for each; then wrk -t1 -c64 (on CPU 1) for SECONDS sends
#    each hold's POST .../confirm, and, on a fresh set of holds, each
#    hold's payment_intent.succeeded webhook (a distinct event, signed
#    beforehand as Stripe signs, valid 300 s). Prints both rows and their
#    ratio; a request file sent through more than once is said so.
# 2. The cost of checking a signature: callgrind's instructions per
#    verification of a 1.5 KB Stripe event (examples/signature_cost.rs,
#    N = 1,000 and 3,000, subtracted), each scheme; and the native time
#    per verification over 200,000. Valgrind hides the CPU's SHA
#    extensions, so its count is the portable SHA-256 path; the native
#    time uses them where the CPU has them.
#
#   scripts/payments-bench.sh [SECONDS] [HOLDS]     (defaults 5, 300000)
#
# Needs wrk and valgrind (apt-get installs them when missing). Loopback
# only. Not part of scripts/test.sh: its figures go in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs="${1:-5}"
holds="${2:-300000}"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v valgrind >/dev/null || need+=(valgrind)
[ "${#need[@]}" -eq 0 ] || apt-get install -y "${need[@]}" >/dev/null
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs (server on 0, load on 1)" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --bin stampede --example signature_cost >/dev/null 2>&1
work=$(mktemp -d)
chmod 755 "$work"
trap stop_started EXIT
secret="whsec_bench_0123456789abcdef"

cat >"$work/c.toml" <<TOML
[admin]
listen = ""
[wal]
durability = "fsync"
[holds]
retained_max = 4000000
default_ttl_ms = 600000
max_ttl_ms = 600000
[limits]
max_batch_ops = 1000
[[payments.gateways]]
name = "stripe"
scheme = "stripe"
secrets = ["$secret"]
TOML
taskset -c 0 target/release/stampede serve --listen 127.0.0.1:0 --data-dir "$work/data" \
  --config "$work/c.toml" >"$work/out" 2>"$work/err" &
started "$!"
wait_line "$work/out" '^ready' "$work/err"
addr=$(sed -n 's/^listening on //p' "$work/out")

# HOLDS holds for each run, over 64 SKUs, and each run's request file.
echo "making 2 x $holds holds..." >&2
python3 - "$addr" "$holds" "$secret" "$work" <<'PY'
import hashlib, hmac, http.client, json, sys, time
addr, holds, secret, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
host, port = addr.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
def call(method, path, body):
    c.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read()
    assert r.status in (200, 201), (r.status, data)
    return json.loads(data)
for s in range(64):
    call("PUT", f"/v1/skus/pay-{s}", {"stock": 1_000_000_000})
def make(n):
    ids = []
    while len(ids) < n:
        k = min(1000, n - len(ids))
        ops = [{"op": "reserve", "customer_id": f"c-{len(ids) + i}",
                "items": [{"sku": f"pay-{(len(ids) + i) % 64}", "qty": 1}]} for i in range(k)]
        for r in call("POST", "/v1/batch", {"ops": ops})["results"]:
            assert r["status"] == 201, r
            ids.append(r["body"]["id"])
    return ids
with open(f"{work}/confirm.req", "w") as f:
    for h in make(holds):
        f.write(f"POST\t/v1/reservations/{h}/confirm\t-\t-\n")
t = int(time.time())
with open(f"{work}/webhook.req", "w") as f:
    for n, h in enumerate(make(holds)):
        body = json.dumps({"id": f"evt_bench_{n}", "type": "payment_intent.succeeded",
                           "data": {"object": {"id": f"pi_bench_{n}", "metadata": {"stampede_hold": h}}}},
                          separators=(",", ":"))
        sig = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
        f.write(f"POST\t/v1/payments/stripe/webhook\tStripe-Signature: t={t},v1={sig}\t{body}\n")
PY

declare -A rps p50 p99
for run in confirm webhook; do
  echo "== $run: wrk -t1 -c64 -d${secs}s"
  taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency -s scripts/bench/replay.lua "http://$addr" \
    -- "$work/$run.req" | tee "$work/$run.wrk"
  rps[$run]=$(sed -n 's/^Requests\/sec: *//p' "$work/$run.wrk")
  p50[$run]=$(awk '$1=="50%"{print $2}' "$work/$run.wrk")
  p99[$run]=$(awk '$1=="99%"{print $2}' "$work/$run.wrk")
done

echo
echo "== signature checks (examples/signature_cost.rs, a 1.5 KB event)"
for scheme in stripe standard; do
  for n in 1000 3000; do
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$scheme.$n" \
      target/release/examples/signature_cost "$scheme" "$n" 2>"$work/cg.$scheme.$n.err"
  done
  a=$(grep -o 'refs: *[0-9,]*' "$work/cg.$scheme.1000.err" | tr -dc 0-9)
  b=$(grep -o 'refs: *[0-9,]*' "$work/cg.$scheme.3000.err" | tr -dc 0-9)
  t0=$(date +%s.%N)
  target/release/examples/signature_cost "$scheme" 200000
  t1=$(date +%s.%N)
  python3 -c "print(f'$scheme: {($b - $a) / 2000:,.0f} instructions per verification (callgrind, portable SHA-256); {($t1 - $t0) / 200000 * 1e9:,.0f} ns native')"
done

echo
echo "| run | per second | p50 | p99 |"
echo "|---|---|---|---|"
for run in confirm webhook; do
  echo "| $run | ${rps[$run]} | ${p50[$run]} | ${p99[$run]} |"
done
python3 -c "print(f'webhook / confirm: {${rps[webhook]} / ${rps[confirm]}:.2f}x')"
