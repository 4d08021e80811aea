#!/usr/bin/env bash
# Fuzzes each target with cargo-fuzz for FUZZ_SECONDS seconds (default 60), one after another,
# and prints each one's executions. Installs the nightly toolchain and cargo-fuzz when missing.
# Fails on the first crash, leak, timeout or out-of-memory: libFuzzer writes the input to
# fuzz/artifacts/<target>/ (replay it: cargo +nightly fuzz run <target> <file>).
# Usage: fuzz/run.sh [target...]   (FUZZ_SECONDS=600 fuzz/run.sh bootstrap_plan)
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
all=(bootstrap_plan jinja_render host_key_policy job_records redact)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Debug assertions on: overflow checks and debug_assert! count as crashes too.
cargo +nightly fuzz build --debug-assertions

# Seeds beside the targets, and the bootstrap fixtures (real CABPK output).
seeds_for() {
    case "$1" in
        bootstrap_plan | jinja_render) echo "seeds/$1 ../src/bootstrap/testdata" ;;
        *) echo "seeds/$1" ;;
    esac
}
dict_for() {
    case "$1" in
        bootstrap_plan | jinja_render) echo "-dict=dicts/bootstrap.dict" ;;
    esac
}

mkdir -p logs
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="logs/$target.log"
    # shellcheck disable=SC2046 # the seed directories and dictionary are words
    cargo +nightly fuzz run --debug-assertions "$target" "corpus/$target" $(seeds_for "$target") -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $(dict_for "$target") 2>&1 | tee "$log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    summary+=("$target: ${seconds}s, ${runs:-?} executions, no crash")
done
printf '%s\n' "${summary[@]}"
