#!/usr/bin/env bash
# Runs every test of stampede: lints, the workspace tests (unit, contract
# rules, the model-based test, the threaded stress test) and the loom models.
# Installs what a fresh machine lacks first. Safe to run again.
#
#   scripts/test.sh            everything
#   PROPTEST_CASES=10000 scripts/test.sh   a longer model-based run
#   STRESS_OPS=200000 scripts/test.sh      a longer stress run
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    exit 1
fi
cargo --version
for component in clippy rustfmt; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --profile ci -- -D warnings

step "workspace tests (profile ci: optimised, with overflow checks)"
export PROPTEST_CASES="${PROPTEST_CASES:-1000}"
cargo test --workspace --profile ci

step "loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2})"
LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" RUSTFLAGS="--cfg stampede_loom" \
    CARGO_TARGET_DIR=target/loom cargo test --profile ci --test loom
