#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: nats-server (JetStream), promtool,
# and a Kafka-protocol broker (tansu, built once and cached in ~/.cargo/bin).
set -euo pipefail

need_apt=()
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
  # The prometheus package starts a server we do not want.
  (systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || pkill -x prometheus || true) >/dev/null 2>&1
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
  echo "test-deps: building the tansu Kafka-protocol broker (once, about 8 minutes)"
  cargo install tansu --version 0.6.0 --locked --features dynostore --quiet
fi
echo "test-deps: nats-server $(nats-server --version 2>&1 | head -1), tansu $(tansu --version 2>/dev/null | head -1 || echo present), $(promtool --version 2>&1 | head -1)"
