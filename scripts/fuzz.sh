#!/usr/bin/env bash
# Runs the libFuzzer targets under fuzz/ one at a time, each for SECONDS, at the lowest CPU
# priority, and prints what each did (runs, coverage, corpus). New interesting inputs go to a
# scratch directory; with --keep they are merged (minimised) into fuzz/corpus/<target>.
#
#   scripts/fuzz.sh SECONDS [--keep] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The machine's toolchain is stable:
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags. No sanitizer is used (-s none):
# hookbridge forbids unsafe code, so what a fuzzer can find is a panic, a hang or runaway
# memory, and libFuzzer catches those by itself, at about twice the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH" RUSTC_BOOTSTRAP=1

seconds="${1:?usage: scripts/fuzz.sh SECONDS [--keep] [TARGET...]}"
shift
keep=0
if [[ "${1:-}" == "--keep" ]]; then
    keep=1
    shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(event_parse config_load placeholder_render chat_markup url_mask cel_eval)
fi

nice -n 19 cargo fuzz build -s none
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    if nice -n 19 cargo fuzz run -s none "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=$((failed + 1))
        tail -40 "$log"
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')"
    new="$(find "$scratch/$t" -type f | wc -l)"
    echo "fuzz $t: $status, ${seconds}s, $runs runs, coverage $cov, $new new inputs"
    if [[ $keep -eq 1 && $status == ok ]]; then
        merged="$scratch/$t.merged"
        mkdir -p "$merged"
        nice -n 19 cargo fuzz run -s none "$t" "$merged" "fuzz/corpus/$t" "$scratch/$t" -- -merge=1 >/dev/null 2>&1
        rm -rf "fuzz/corpus/$t"
        mv "$merged" "fuzz/corpus/$t"
        echo "fuzz $t: corpus kept: $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
    fi
done
echo "fuzz: $(( ${#targets[@]} - failed )) passed, $failed failed"
[[ $failed -eq 0 ]]
