#!/usr/bin/env bash
# The whole test suite: installs what it needs (brokers included), then formatting, lints,
# unit and integration tests against real brokers and HTTP receivers, and the chart and
# chat-payload checks. Idempotent; tools are cached between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Build outputs are cached between runs, as a CI cache would keep them: a fresh machine
# builds everything once, later runs from any clone rebuild only what changed. Cargo keeps
# the cache correct (it rebuilds whatever a source, flag or lock file changed).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hookbridge/target}"
mkdir -p "$CARGO_TARGET_DIR"

bash scripts/test-deps.sh
# The image cannot be built here (no container engine); its Dockerfile is linted.
"${HOOKBRIDGE_TOOLS:-$HOME/.cache/hookbridge-tools}/hadolint-venv/bin/hadolint" Dockerfile
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The public API's documentation builds without a warning: every link resolves, every
# item it shows is documented.
RUSTDOCFLAGS="-D warnings -D missing_docs" cargo doc --no-deps --locked
cargo test --locked --all-targets 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt"
# The optional OpenTelemetry exporter (feature `otlp`): lints and its own test.
cargo clippy --locked --features otlp --all-targets -- -D warnings
cargo test --locked --features otlp --test otlp
# Memory per event, measured on the release binary (tests/memory.rs).
cargo build --release --locked
HOOKBRIDGE_BIN="$CARGO_TARGET_DIR/release/hookbridge" cargo test --locked --test memory
# Fuzz targets: `cargo test` above replays their kept corpus (tests/fuzz_corpus.rs). With
# FUZZ_SECONDS set (and cargo-fuzz installed), each target also gets that long of libFuzzer;
# off by default, as the instrumented release build alone takes longer than the suite.
if [ -n "${FUZZ_SECONDS:-}" ] && command -v cargo-fuzz >/dev/null 2>&1; then
  bash scripts/fuzz.sh "$FUZZ_SECONDS"
fi
bash scripts/check-helm.sh
if [ -f scripts/check-chat-payloads.sh ]; then
  bash scripts/check-chat-payloads.sh
fi
