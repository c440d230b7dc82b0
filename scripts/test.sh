#!/usr/bin/env bash
# The whole test suite: installs what it needs (brokers included), then formatting, lints,
# unit and integration tests against real brokers and HTTP receivers, and the chart and
# chat-payload checks. Idempotent; tools are cached between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/test-deps.sh
# The image cannot be built here (no container engine); its Dockerfile is linted.
"${HOOKBRIDGE_TOOLS:-$HOME/.cache/hookbridge-tools}/hadolint-venv/bin/hadolint" Dockerfile
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets 2>&1 | tee target/test-output.txt
# The optional OpenTelemetry exporter (feature `otlp`): lints and its own test.
cargo clippy --locked --features otlp --all-targets -- -D warnings
cargo test --locked --features otlp --test otlp
# Memory per event, measured on the release binary (tests/memory.rs).
cargo build --release --locked
HOOKBRIDGE_BIN=target/release/hookbridge cargo test --locked --test memory
# Fuzz targets: `cargo test` above replays their kept corpus (tests/fuzz_corpus.rs); where
# cargo-fuzz is installed, each target also gets a few seconds of libFuzzer.
if command -v cargo-fuzz >/dev/null 2>&1; then
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-5}"
fi
bash scripts/check-helm.sh
if [ -f scripts/check-chat-payloads.sh ]; then
  bash scripts/check-chat-payloads.sh
fi
