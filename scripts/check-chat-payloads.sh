#!/usr/bin/env bash
# Validates the golden chat payloads in tests/golden/ with the services' own libraries:
#   - Slack: `blocks` type-checked against KnownBlock[] from @slack/types with tsc;
#   - Teams: Adaptive Cards parsed and validated by the `adaptivecards` package.
# (`cargo test --test chat_payloads` keeps the goldens equal to what hookbridge sends.)
#
#   scripts/check-chat-payloads.sh [GOLDEN_DIR]
#
# The npm packages, pinned in scripts/chat-check/package-lock.json, are installed once
# into scripts/chat-check/node_modules and reinstalled only when the lock file changes.
#
# Exits non-zero when any check fails; the last line reads
# "chat-payloads: N passed, N failed".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECK="$ROOT/scripts/chat-check"
GOLDEN="${1:-$ROOT/tests/golden}"

fail() {
    printf 'check-chat-payloads: %s\n' "$*" >&2
    echo "chat-payloads: 0 passed, 1 failed"
    exit 2
}

command -v node >/dev/null 2>&1 || fail "node is needed (Node.js 18 or later)"
command -v npm >/dev/null 2>&1 || fail "npm is needed"
[[ -d "$GOLDEN" ]] || fail "no golden directory at $GOLDEN"

# Reinstall only when package.json or the lock file changed since the last install.
stamp="$CHECK/node_modules/.hookbridge-lock"
want="$(cat "$CHECK/package.json" "$CHECK/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    printf 'check-chat-payloads: installing the checkers (npm ci in %s)\n' "${CHECK#"$ROOT"/}" >&2
    (cd "$CHECK" && npm ci --no-audit --no-fund --loglevel=error >&2) || fail "npm ci failed"
    printf '%s\n' "$want" >"$stamp"
fi

exec node "$CHECK/check.js" "$GOLDEN"
