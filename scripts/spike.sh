#!/usr/bin/env bash
# Rehearse a drop: builds release, starts stampede with
# configs/flash-sale.toml on a free loopback port and a fresh data
# directory, runs configs/scenarios/spike.toml against it with
# stampede-loadgen, prints the report and where results.json is.
#
#   scripts/spike.sh [SCENARIO] [OUT_DIR]
#       (defaults configs/scenarios/spike.toml, target/spike)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
scenario="${1:-configs/scenarios/spike.toml}"
out="${2:-target/spike}"
echo "building (release)..." >&2
cargo build --release -p stampede --bin stampede >&2
cargo build --release -p loadgen >&2
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
key="spike-admin-key-$RANDOM$RANDOM$RANDOM"
sed 's/^listen = .*/listen = "127.0.0.1:0"/' configs/flash-sale.toml > "$work/flash-sale.toml"
STAMPEDE_ADMIN_KEYS="$key" target/release/stampede serve --config "$work/flash-sale.toml" \
  --data-dir "$work/data" >"$work/out" 2>"$work/err" &
pid=$!
wait_line "$work/out" '^ready' "$work/err"
addr=$(sed -n 's/^listening on //p' "$work/out")
echo "stampede (configs/flash-sale.toml) on $addr; running $scenario" >&2
status=0
STAMPEDE_LOADGEN_KEY="$key" target/release/stampede-loadgen --scenario "$scenario" \
  --target "http://$addr" --out "$out" || status=$?
echo "server's own account:"
curl -s -H "Authorization: Bearer $key" "http://$addr/v1/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
a, l = s["admission"], s["log"]
print("  admission: admitted %d, shed %s, waitlisted now %d" % (a["admitted"], a["shed"], a["waitlisted"]))
print("  log: %d records in %d fsync groups (%.1f a group)" % (l["records"], l["groups"], l["average_group"]))'
exit "$status"
