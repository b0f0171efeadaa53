#!/usr/bin/env bash
# Runs every test of stampede: lints, the workspace tests (unit, contract
# rules, the model-based test, the threaded stress test), the contract
# suite (tests/api.rs) once more on the redis store, schemathesis
# against docs/openapi.yaml and a live server, and the loom models.
# Installs what a fresh machine lacks first. Safe to run again.
#
#   scripts/test.sh            everything
#   PROPTEST_CASES=10000 scripts/test.sh   a longer model-based run
#   STRESS_OPS=200000 scripts/test.sh      a longer stress run
#   SCHEMATHESIS_EXAMPLES=200 SCHEMATHESIS_SEED=7 scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    exit 1
fi
cargo --version
# redis-server: the load generator's redis:// target tests start their own.
if ! command -v redis-server >/dev/null; then
    apt-get install -y redis-server >/dev/null
fi
# The load generator's charts (plotters) find a font through fontconfig:
# the library to link against and one TrueType font to draw labels with.
if ! pkg-config --exists fontconfig 2>/dev/null || ! fc-list 2>/dev/null | grep -qi ttf; then
    apt-get install -y pkg-config libfontconfig1-dev fonts-dejavu-core >/dev/null
fi
# libfaketime (Debian's faketime): tests/redis_skew.rs runs a node whose
# clock is off.
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]; then
    apt-get install -y faketime >/dev/null
fi
# Debian's chromium: the admin status page is tested in it, headless.
if ! command -v chromium >/dev/null; then
    apt-get install -y chromium >/dev/null
fi
# schemathesis (pinned) for the property-based API run.
SCHEMATHESIS_VERSION=4.32.5
if ! python3 -m schemathesis.cli --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
# The official Standard Webhooks library (pinned): tests/payments.rs has
# it sign the standard scheme's webhooks (scripts/sign-standard.py).
STANDARDWEBHOOKS_VERSION=1.3.0
if ! python3 -c "import standardwebhooks" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
fi
for component in clippy rustfmt; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done

# One build for every test: the fault-injection feature only compiles in
# the panics that tests/panics.rs arms by the environment (src/fault.rs),
# and needs no second build of the server for that test.
features=(--features stampede/fault-injection)

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --profile ci "${features[@]}" -- -D warnings

step "workspace tests (profile ci: optimised, with overflow checks; with tests/panics.rs)"
export PROPTEST_CASES="${PROPTEST_CASES:-1000}"
cargo test --workspace --profile ci "${features[@]}"

step "the HTTP contract, drop, event, webhook and payment suites again, on the redis store (a redis-server per test server)"
STAMPEDE_TEST_STORE=redis cargo test --profile ci "${features[@]}" --test api --test drops --test events --test webhooks --test payments

step "the HTTP contract, drop, event, webhook and payment suites again, on a Redis Cluster (3 primaries per test server)"
STAMPEDE_TEST_STORE=redis-cluster cargo test --profile ci "${features[@]}" --test api --test drops --test events --test webhooks --test payments

step "schemathesis: docs/openapi.yaml against a live server, all checks"
STAMPEDE_BIN=target/ci/stampede scripts/schemathesis.sh "${SCHEMATHESIS_EXAMPLES:-40}"

step "loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2})"
LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" RUSTFLAGS="--cfg stampede_loom" \
    CARGO_TARGET_DIR=target/loom cargo test --profile ci --test loom
