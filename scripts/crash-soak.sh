#!/usr/bin/env bash
# kill -9 at scale: N cycles of the real server under concurrent HTTP load,
# each killed with SIGKILL at a random moment, checked with `wal verify`,
# restarted and audited (every acknowledged change present, held + sold <=
# stock). Exits 1 at the first loss. Figures go in BENCHMARKS.md.
#
#   scripts/crash-soak.sh [CYCLES=1000] [CLIENTS=4]
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-1000}"
clients="${2:-4}"
cargo build --release --bin stampede --bin stampede-crash-soak
dir="$(mktemp -d)/data"
trap 'rm -rf "$(dirname "$dir")"' EXIT
target/release/stampede-crash-soak --stampede target/release/stampede \
    --dir "$dir" --cycles "$cycles" --clients "$clients" --seed "${SEED:-$RANDOM}"
