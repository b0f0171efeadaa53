#!/usr/bin/env bash
# The admin status page under a spike, photographed: builds release,
# starts stampede (configs/flash-sale.toml, admin listener on a free
# loopback port), runs configs/scenarios/spike.toml against it, and while
# the drop is open takes a headless-Chromium screenshot of the page.
#
#   scripts/admin-screenshot.sh [OUT_PNG] [AT_S]
#       (defaults docs/admin-page.png, 8: seconds into the scenario; the
#       drop opens at 5)
#
# Needs chromium (apt-get install -y chromium). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
png="${1:-docs/admin-page.png}"
at="${2:-8}"
command -v chromium >/dev/null || { echo "chromium is missing: apt-get install -y chromium" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release -p stampede --bin stampede >&2
cargo build --release -p loadgen >&2
work="$(mktemp -d)"
pid=""
load=""
cleanup() {
  [ -n "$load" ] && kill "$load" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
key="shot-admin-key-$RANDOM$RANDOM$RANDOM"
sed 's/^listen = .*/listen = "127.0.0.1:0"/' configs/flash-sale.toml > "$work/flash-sale.toml"
STAMPEDE_ADMIN_KEYS="$key" target/release/stampede serve --config "$work/flash-sale.toml" \
  --admin-listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/err" &
pid=$!
wait_line "$work/out" '^ready' "$work/err"
addr=$(sed -n 's/^listening on //p' "$work/out")
page=$(grep -o 'admin page on http://[^/]*/' "$work/err" | sed 's/admin page on //')
echo "stampede on $addr, status page $page; spike running, picture at ${at} s" >&2
STAMPEDE_LOADGEN_KEY="$key" target/release/stampede-loadgen \
  --scenario configs/scenarios/spike.toml --target "http://$addr" --out "$work/loadgen" \
  >"$work/loadgen.log" 2>&1 &
load=$!
# The page needs two polls to show rates: start it 2 s before the moment.
sleep "$((at > 2 ? at - 2 : 0))"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --virtual-time-budget=2500 --window-size=1280,900 --screenshot="$png" "$page" 2>/dev/null
echo "wrote $png" >&2
