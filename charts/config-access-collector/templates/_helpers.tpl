{{/* Chart name. */}}
{{- define "cac.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "cac.fullname" -}}
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

{{- define "cac.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cac.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cac.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cac.labels" -}}
helm.sh/chart: {{ include "cac.chart" . }}
{{ include "cac.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cac.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cac.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cac.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* host:port of a listener. */}}
{{- define "cac.listen" -}}
{{- printf "%s:%d" .host (int .port) }}
{{- end }}

{{/* Whether the kernel Service endpoint map is pinned (and its directory mounted). */}}
{{- define "cac.pinned" -}}
{{- if and .Values.serviceEndpoints.enabled .Values.serviceEndpoints.pinDir }}true{{ else }}false{{ end }}
{{- end }}

{{/*
Where the pin directory is mounted in the container. Not at its host path:
the container's /sys is its own sysfs, where the runtime cannot make a
mount point below /sys/fs/bpf (only /sys/fs/bpf itself exists there, and
mounting all of it would show the collector every other tool's pins).
*/}}
{{- define "cac.pinMount" -}}/run/config-access-collector-bpf{{- end }}

{{/* Where the ConfigMap's config file is mounted. */}}
{{- define "cac.configDir" -}}/etc/config-access-collector{{- end }}
{{- define "cac.tokenDir" -}}/etc/config-access-collector-api-token{{- end }}

{{/* The collector's config file (config/config.yaml format) from the values. */}}
{{- define "cac.config" -}}
{{- $v := .Values }}
{{- $c := dict
  "kubelet_root" $v.kubeletRoot
  "health_listen" (include "cac.listen" (dict "host" $v.listenHost "port" $v.health.port))
  "metrics_listen" (ternary (include "cac.listen" (dict "host" $v.listenHost "port" $v.metrics.port)) "off" $v.metrics.enabled)
  "api_socket" (ternary (printf "%s/api.sock" (trimSuffix "/" $v.apiSocket.hostDir)) "off" $v.apiSocket.enabled)
  "api_socket_mode" $v.apiSocket.mode
  "state_dir" (ternary (trimSuffix "/" $v.stateDir.hostPath) "off" $v.stateDir.enabled)
  "otlp_protocol" $v.otlp.protocol
  "otlp_metrics" $v.otlp.metrics
  "otlp_logs" $v.otlp.logs
  "service_endpoints" $v.serviceEndpoints.enabled
  "service_endpoints_pin" (ternary (printf "%s/svc_endpoints" (include "cac.pinMount" .)) "off" (eq (include "cac.pinned" .) "true"))
}}
{{- if $v.apiTcp.enabled }}
{{- $_ := set $c "api_listen" (include "cac.listen" (dict "host" $v.listenHost "port" $v.apiTcp.port)) }}
{{- if $v.apiTcp.tokenSecret.name }}
{{- $_ := set $c "api_token_file" (printf "%s/%s" (include "cac.tokenDir" .) $v.apiTcp.tokenSecret.key) }}
{{- end }}
{{- end }}
{{- with $v.otlp.endpoint }}
{{- $_ := set $c "otlp_endpoint" . }}
{{- end }}
{{- with $v.otlp.headers }}
{{- $_ := set $c "otlp_headers" . }}
{{- end }}
{{- toYaml (merge $c (deepCopy $v.config)) }}
{{- end }}

{{/* PromQL label matchers that pick this release's collectors (prometheusRule.selector, or the job the chart's ServiceMonitor gives its targets: the metrics Service's name). */}}
{{- define "cac.alertSelector" -}}
{{- default (printf "job=%q" (printf "%s-metrics" (include "cac.fullname" .))) .Values.prometheusRule.selector }}
{{- end }}

{{/*
How much counter .metric{.match} grew in .window, per series. The collector
exports a labelled counter from its first increment on, and a restarted
collector's counters start again at 0, absent until their first increment.
increase() alone misses both first increments (it sees no step before a
series' first sample in the window), so a series counts its whole value when
  * it has no sample in the hour before the window (it appeared within it), or
  * its values in the window are all below its last one before the window
    (the collector restarted in place: same labels, counting from 0),
and increase() otherwise. "Before the window" is a range, not an instant
lookup: the staleness marker of one failed scrape must not make every old
series look new.
*/}}
{{- define "cac.alertCount" -}}
{{- $s := printf "%s{%s}" .metric .match }}
{{- $before := printf "last_over_time(%s[1h] offset %s)" $s .window -}}
(
    max_over_time({{ $s }}[{{ .window }}]) unless {{ $before }}
  or
    max_over_time({{ $s }}[{{ .window }}]) < {{ $before }}
  or
    increase({{ $s }}[{{ .window }}])
)
{{- end }}

{{/*
The workload's namespace in `namespace`: scraped without honor_labels (the
chart's ServiceMonitor), the collector's own `namespace` label arrives as
`exported_namespace` and `namespace` is the collector pod's.
*/}}
{{- define "cac.alertWorkloadNamespace" -}}
label_replace(
  {{- . | nindent 2 }},
  "namespace", "$1", "exported_namespace", "(.+)"
)
{{- end }}

{{/* `,object_kind=~"A|B"`, or nothing for an empty list (every kind). */}}
{{- define "cac.alertObjectKinds" -}}
{{- with . }},object_kind=~"{{ join "|" . }}"{{ end }}
{{- end }}

{{/* One alerting rule: .name, .alert (its values), .labels (prometheusRule.alertLabels), .expr, .summary, .description. */}}
{{- define "cac.alertRule" -}}
- alert: {{ .name }}
  expr: |-
    {{- .expr | nindent 4 }}
  for: {{ .alert.for }}
  labels:
    {{- toYaml (merge (dict "severity" .alert.severity) (deepCopy (default (dict) .labels))) | nindent 4 }}
  annotations:
    summary: {{ .summary | quote }}
    description: {{ .description | quote }}
{{- end }}
