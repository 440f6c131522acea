{{/*
Expand the name of the chart.
*/}}
{{- define "affinity-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated to 63 characters (DNS label limit).
Component suffixes ("-redis", "-simulator") fit because the base stays under 52.
*/}}
{{- define "affinity-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "affinity-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels; pass a dict {"ctx": $, "component": "gateway"}.
*/}}
{{- define "affinity-gateway.labels" -}}
helm.sh/chart: {{ include "affinity-gateway.chart" .ctx }}
{{ include "affinity-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: affinity-gateway
{{- end }}

{{- define "affinity-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "affinity-gateway.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "affinity-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "affinity-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "affinity-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "affinity-gateway.redisName" -}}
{{- printf "%s-redis" (include "affinity-gateway.fullname" .) }}
{{- end }}

{{- define "affinity-gateway.simulatorName" -}}
{{- printf "%s-simulator" (include "affinity-gateway.fullname" .) }}
{{- end }}

{{/*
The Secret whose keys become the gateway's environment ("" when there is none).
*/}}
{{- define "affinity-gateway.keysSecretName" -}}
{{- if .Values.providerKeys.existingSecret }}
{{- .Values.providerKeys.existingSecret }}
{{- else if .Values.providerKeys.values }}
{{- printf "%s-provider-keys" (include "affinity-gateway.fullname" .) }}
{{- end }}
{{- end }}

{{/*
"true" when the pods get a REDIS_URL (bundled or external Redis), else "".
*/}}
{{- define "affinity-gateway.redisConfigured" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.url .Values.externalRedis.existingSecret }}true{{ end }}
{{- end }}

{{/*
The gateway config as YAML: .Values.config plus what the chart wires in (the session store
URL, the simulator as every provider's base_url). Also checks what only the chart can see.
*/}}
{{- define "affinity-gateway.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $routing := dict }}
{{- if hasKey $cfg "routing" }}{{ $routing = $cfg.routing }}{{ end }}
{{- $cache := dict }}
{{- if hasKey $routing "session_cache" }}{{ $cache = $routing.session_cache }}{{ end }}
{{- if include "affinity-gateway.redisConfigured" . }}
{{- $_ := set $cache "type" "redis" }}
{{- $_ := set $cache "url" "$REDIS_URL" }}
{{- $_ := set $routing "session_cache" $cache }}
{{- $_ := set $cfg "routing" $routing }}
{{- end }}
{{- $sharedStore := or (eq (toString (dig "type" "" $cache)) "redis") (hasKey $cache "url") (hasKey $cache "sentinel") }}
{{- if and (gt (int .Values.workers) 1) (not $sharedStore) }}
{{- fail "workers > 1 needs a shared pin store: set redis.enabled, externalRedis, or config.routing.session_cache" }}
{{- end }}
{{- if .Values.simulator.enabled }}
{{- $url := printf "http://%s:8000" (include "affinity-gateway.simulatorName" .) }}
{{- $providers := list }}
{{- range $cfg.model_providers }}
{{- $p := omit . "access_key" }}
{{- $_ := set $p "base_url" $url }}
{{- $providers = append $providers $p }}
{{- end }}
{{- $_ := set $cfg "model_providers" $providers }}
{{- end }}
{{- if .Values.tracing.enabled }}
{{- $tracing := omit (default (dict) $cfg.tracing) "random_sampling" "opentracing_grpc_endpoint" }}
{{- $_ := set $tracing "enabled" true }}
{{- with .Values.tracing.otlpEndpoint }}{{ $_ := set $tracing "otlp_endpoint" . }}{{ end }}
{{- $_ := set $tracing "protocol" .Values.tracing.protocol }}
{{- $_ := set $tracing "sample_ratio" .Values.tracing.sampleRatio }}
{{- $_ := set $tracing "capture_content" .Values.tracing.captureContent }}
{{- with .Values.tracing.serviceName }}{{ $_ := set $tracing "service_name" . }}{{ end }}
{{- $_ := set $cfg "tracing" $tracing }}
{{- end }}
{{- $drain := int (dig "server" "drain_timeout_seconds" 25 $cfg) }}
{{- $needed := add $drain (int .Values.lifecycle.preStopSleepSeconds) }}
{{- if le (int .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.server.drain_timeout_seconds + lifecycle.preStopSleepSeconds (%d), or streams are killed mid-drain" (int .Values.terminationGracePeriodSeconds) $needed) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}
