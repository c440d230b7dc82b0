{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "hookbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources (63 characters at most, the DNS label limit).
The release name alone when it already holds the chart name.
*/}}
{{- define "hookbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "hookbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "hookbridge.labels" -}}
helm.sh/chart: {{ include "hookbridge.chart" . }}
{{ include "hookbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ include "hookbridge.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the pod template: no chart version nor app version, so that a chart bump that
changes nothing else in the pods does not restart them.
*/}}
{{- define "hookbridge.podLabels" -}}
{{ include "hookbridge.selectorLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The rendered config.yaml.
*/}}
{{- define "hookbridge.configYaml" -}}
{{- toYaml .Values.config }}
{{- end }}

{{/*
Name of the config ConfigMap: existingConfigMap, or the full name and a hash of the
content. A new config makes a new ConfigMap, so pods of the previous revision (still
running during a stalled rollout, or restarted then) keep reading the config they
started with.
*/}}
{{- define "hookbridge.configMapName" -}}
{{- if .Values.existingConfigMap }}
{{- .Values.existingConfigMap }}
{{- else }}
{{- printf "%s-%s" (include "hookbridge.fullname" . | trunc 52 | trimSuffix "-") (include "hookbridge.configYaml" . | sha256sum | trunc 10) }}
{{- end }}
{{- end }}

{{/*
Whether an autoscaler owns the replica count.
*/}}
{{- define "hookbridge.autoscaled" -}}
{{- if or .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}true{{ end }}
{{- end }}

{{/*
Upper bound of an autoscaler: its own value, or autoscaling.partitions.
*/}}
{{- define "hookbridge.maxReplicas" -}}
{{- $max := .max }}
{{- if kindIs "invalid" $max }}
{{- $max = .root.Values.autoscaling.partitions }}
{{- end }}
{{- if kindIs "invalid" $max }}
{{- fail (printf "%s: set it, or autoscaling.partitions (the partition count of the source topics, the most replicas that can have work)" .name) }}
{{- end }}
{{- $max }}
{{- end }}

{{/*
Labels that select the pods; they must never change between upgrades.
*/}}
{{- define "hookbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "hookbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hookbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: image.tag, or the chart's appVersion.
*/}}
{{- define "hookbridge.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Port hookbridge listens on: the port of config.server.listen (default 0.0.0.0:9464).
The probes and the Service need that server, so an explicit null (server disabled) or
a loopback address is refused.
*/}}
{{- define "hookbridge.containerPort" -}}
{{- $server := .Values.config.server | default dict }}
{{- $listen := "0.0.0.0:9464" }}
{{- if hasKey $server "listen" }}
{{- $listen = $server.listen }}
{{- end }}
{{- if not $listen }}
{{- fail "config.server.listen must be set: the probes, the Service and the ServiceMonitor use it" }}
{{- end }}
{{- $listen = toString $listen }}
{{- if or (hasPrefix "127." $listen) (hasPrefix "localhost:" $listen) (hasPrefix "[::1]:" $listen) }}
{{- fail (printf "config.server.listen (%s) must not be a loopback address: the kubelet probes and Prometheus reach it from outside the pod" $listen) }}
{{- end }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if not $port }}
{{- fail (printf "config.server.listen (%s) must end with a port, e.g. 0.0.0.0:9464" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
A duration with units ("30s", "1m30s", "1m 30s", "500ms", "2h") in seconds, or an
empty string when it cannot be read (the check that uses it is then skipped and
hookbridge itself reports the error at start).
*/}}
{{- define "hookbridge.durationSeconds" -}}
{{- $text := toString . | trim }}
{{- $units := dict "ns" 0.000000001 "nsec" 0.000000001 "us" 0.000001 "usec" 0.000001 "ms" 0.001 "msec" 0.001 "s" 1 "sec" 1 "secs" 1 "second" 1 "seconds" 1 "m" 60 "min" 60 "mins" 60 "minute" 60 "minutes" 60 "h" 3600 "hr" 3600 "hrs" 3600 "hour" 3600 "hours" 3600 "d" 86400 "day" 86400 "days" 86400 }}
{{- if regexMatch "^([0-9]+(\\.[0-9]+)?[ ]*[a-z]+[ ]*)+$" $text }}
{{- $total := 0.0 }}
{{- $known := true }}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?[ ]*[a-z]+" $text -1 }}
{{- $unit := regexFind "[a-z]+$" $part }}
{{- if hasKey $units $unit }}
{{- $total = addf $total (mulf (regexFind "^[0-9]+(\\.[0-9]+)?" $part | float64) (get $units $unit)) }}
{{- else }}
{{- $known = false }}
{{- end }}
{{- end }}
{{- if $known }}
{{- $total }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks across values that the schema cannot express. Pods get
terminationGracePeriodSeconds between SIGTERM and SIGKILL; hookbridge drains in-flight
deliveries and commits source positions for up to delivery.shutdown_timeout, so the
grace period must be longer or a rollout cuts deliveries short (they are then replayed,
so nothing is lost, but receivers see duplicates).
*/}}
{{- define "hookbridge.validate" -}}
{{- include "hookbridge.validateConfigShape" . }}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled: enable one of them (KEDA runs its own HPA)" }}
{{- end }}
{{- if and (not .Values.existingConfigMap) (not .Values.config.triggers) (not .Values.config.allow_no_triggers) }}
{{- fail "config.triggers is empty: hookbridge would acknowledge every event and deliver none. Add triggers, or set config.allow_no_triggers: true (e.g. for a dry run)" }}
{{- end }}
{{- $delivery := .Values.config.delivery | default dict }}
{{- $timeout := "30s" }}
{{- if hasKey $delivery "shutdown_timeout" }}
{{- $timeout = $delivery.shutdown_timeout }}
{{- end }}
{{- $seconds := include "hookbridge.durationSeconds" $timeout }}
{{- if and $seconds (le (float64 .Values.terminationGracePeriodSeconds) (float64 $seconds)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.delivery.shutdown_timeout (%v): pods would be killed before they finish draining" .Values.terminationGracePeriodSeconds $timeout) }}
{{- end }}
{{- end }}

{{/*
Traps of Helm values that would make hookbridge refuse its configuration at start,
caught at render time with a message that says what to write instead.
- Helm merges user values into the defaults, so switching the source (or a
  destination) from the default Kafka type keeps the Kafka keys unless they are set to
  null; hookbridge rejects unknown keys.
- Helm reads values as YAML 1.1: an unquoted `on:` key becomes "true", and unquoted
  no / yes become booleans.
*/}}
{{- define "hookbridge.validateConfigShape" -}}
{{- $config := .Values.config }}
{{- $source := $config.source | default dict }}
{{- if ne (toString $source.type) "kafka" }}
{{- $stale := list }}
{{- range $key := list "brokers" "group_id" "topics" }}
{{- if hasKey $source $key }}
{{- $stale = append $stale $key }}
{{- end }}
{{- end }}
{{- if $stale }}
{{- fail (printf "config.source.type is %s but config.source still holds the Kafka keys %s: Helm merges your values into the chart's default Kafka source, so set them to null (config.source.%s: null)" (toString $source.type) (join ", " $stale) (first $stale)) }}
{{- end }}
{{- end }}
{{- range $name := list "responses" "dead_letter" }}
{{- $destination := get $config $name | default dict }}
{{- if and (ne (toString $destination.type) "kafka") (hasKey $destination "topic") }}
{{- fail (printf "config.%s.type is %s but config.%s still holds the Kafka key topic: Helm merges your values into the chart's default, so set it to null (config.%s.topic: null)" $name (toString $destination.type) $name $name) }}
{{- end }}
{{- end }}
{{- range $i, $trigger := $config.triggers | default list }}
{{- if and (kindIs "map" $trigger) (hasKey $trigger "true") }}
{{- fail (printf "config.triggers[%d]: write the key as \"on\": (quoted); Helm reads values as YAML 1.1, where an unquoted on is the boolean true" $i) }}
{{- end }}
{{- end }}
{{- range $i, $action := $config.actions | default list }}
{{- if and (kindIs "map" $action) (kindIs "bool" $action.other_actions) }}
{{- fail (printf "config.actions[%d].other_actions: write \"no\" or \"yes\" (quoted); Helm reads values as YAML 1.1, where an unquoted no / yes is a boolean" $i) }}
{{- end }}
{{- end }}
{{- end }}
