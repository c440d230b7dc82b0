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
bash scripts/check-helm.sh
if [ -f scripts/check-chat-payloads.sh ]; then
  bash scripts/check-chat-payloads.sh
fi
