#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for a bounded time.
#
#   scripts/fuzz.sh              every target, 60 s each
#   scripts/fuzz.sh 300          every target, 300 s each
#   scripts/fuzz.sh 120 npy_reader
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and libFuzzer's sanitizer
# flags, which rustc accepts only on nightly. On a stable toolchain this
# script sets RUSTC_BOOTSTRAP=1 so that stable rustc accepts them; with a
# nightly toolchain installed, `cargo +nightly fuzz run ...` works as well.
#
# A crash leaves its input in fuzz/artifacts/TARGET/; reproduce it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...`,
# then copy the input under tests/fuzz_regressions/ and add a test to
# tests/fuzz_regressions.rs. The corpus grows in fuzz/corpus/TARGET/ (ignored
# by git) and is reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(npy_reader aggregate_api)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: cargo-fuzz is missing; install it with \`cargo install cargo-fuzz\`" >&2
    exit 1
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
for target in "${targets[@]}"; do
    echo "scripts/fuzz.sh: fuzzing $target for ${seconds} s" >&2
    mkdir -p "corpus/$target"
    # -rss_limit_mb and -malloc_limit_mb turn a huge allocation driven by the
    # input (a header that claims gigabytes) into a reported crash.
    cargo fuzz run --release "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10
done
