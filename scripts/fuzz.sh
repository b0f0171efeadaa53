#!/usr/bin/env bash
# Runs every fuzz target (cargo fuzz, libFuzzer) for SECONDS each, starting
# from the committed seeds in fuzz/corpus/ (seed-*: made by
# tests/fuzz_corpus.rs; found-*: inputs that once failed, kept as
# regressions). New inputs go to fuzz/work/ (not committed); a crash, hang
# or OOM lands in fuzz/artifacts/ and fails the run. Needs a nightly toolchain and
# cargo-fuzz (installed here if missing). CI runs the corpora only
# (tests/fuzz_corpus.rs).
#
#   scripts/fuzz.sh [SECONDS=60] [TARGET...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(log_segment log_records checkpoint_image request)
if ! rustup toolchain list | grep -q nightly; then
    echo "cargo fuzz needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in "${targets[@]}"; do
    echo "==> $target for ${seconds}s"
    mkdir -p "fuzz/work/$target"
    # -timeout: a single input running over 10 s is a hang.
    cargo +nightly fuzz run --release "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 2>&1 \
        | grep -E "^(#[0-9]+.*(DONE|pulse)|==|SUMMARY|artifact|Done)" || true
    if [ -n "$(find "fuzz/artifacts/$target" -type f 2>/dev/null)" ]; then
        echo "FOUND: see fuzz/artifacts/$target" >&2
        exit 1
    fi
done
