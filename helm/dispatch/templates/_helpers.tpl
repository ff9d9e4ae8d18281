{{/*
Names. `dispatch.fullname` prefixes every object; components append -api, -worker, -migrations.
*/}}
{{- define "dispatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dispatch.fullname" -}}
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

{{- define "dispatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. Call with (dict "ctx" $ "component" "api").
app.kubernetes.io/name is dispatch-api / dispatch-worker / dispatch-migrations, the names the
Prometheus example in deploy/prometheus/prometheus.yml selects pods by.
*/}}
{{- define "dispatch.labels" -}}
helm.sh/chart: {{ include "dispatch.chart" .ctx }}
{{ include "dispatch.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: {{ include "dispatch.name" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels (immutable on Deployments: never add to them). */}}
{{- define "dispatch.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" (include "dispatch.name" .ctx) .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}

{{/* The image reference: repository, then @digest when set, else :tag (default appVersion). */}}
{{- define "dispatch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{- define "dispatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dispatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The migration hook runs before the chart's own ServiceAccount exists on a first install, so it
uses migrations.serviceAccountName, or an existing account named in serviceAccount.name when
the chart does not create one, or the namespace's `default` (with no token mounted).
*/}}
{{- define "dispatch.migrationsServiceAccountName" -}}
{{- if .Values.migrations.serviceAccountName }}
{{- .Values.migrations.serviceAccountName }}
{{- else if and (not .Values.serviceAccount.create) .Values.serviceAccount.name }}
{{- .Values.serviceAccount.name }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/*
Non-secret environment of one binary, as a map: the shared settings, then the component's
DISPATCH_* keys (values.yaml `api.config` / `worker.config`). Rendered into its ConfigMap and,
for the API, inline into the migration Job (which runs before any ConfigMap exists).
Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "dispatch.configEnv" -}}
{{- $v := .ctx.Values -}}
{{- $env := dict "DISPATCH_LOG_FORMAT" $v.logFormat "RUST_LOG" $v.rustLog }}
{{- with $v.otel.endpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" . }}
{{- end }}
{{- with $v.otel.tracesSampler }}
{{- $_ := set $env "OTEL_TRACES_SAMPLER" . }}
{{- end }}
{{- with $v.otel.tracesSamplerArg }}
{{- $_ := set $env "OTEL_TRACES_SAMPLER_ARG" (toString .) }}
{{- end }}
{{- with $v.otel.resourceAttributes }}
{{- $_ := set $env "OTEL_RESOURCE_ATTRIBUTES" . }}
{{- end }}
{{- range $key, $value := (index $v .component).config }}
{{- /* Helm reads YAML numbers as float64: 1048576 would print as 1.048576e+06. */}}
{{- $_ := set $env $key (ternary (int64 $value | toString) (toString $value) (kindIs "float64" $value)) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
The database URL, the secret keys and, where asked, the API keys, from Secrets. Call with (dict
"ctx" $ "secret" NAME "apiKeys" BOOL): NAME is the chart's Secret (or the migration hook's) and
is used unless database.existingSecret / apiKeys.existingSecret / secretKeys.existingSecret name
others. The API keys come from apiKeys.existingSecret, else database.existingSecret (optional
there: a missing key makes dispatch-api stop at start-up naming DISPATCH_API_KEYS, unless
DISPATCH_AUTH_DISABLED), else the chart's Secret when apiKeys.value is set. The secret keys
(DISPATCH_SECRET_KEYS, which both binaries need) come the same way from secretKeys.*; without
them both binaries stop at start-up naming DISPATCH_SECRET_KEYS.
*/}}
{{- define "dispatch.secretEnv" -}}
{{- $v := .ctx.Values -}}
{{- $ak := $v.apiKeys -}}
{{- $sk := $v.secretKeys -}}
{{- if and $v.database.existingSecret $ak.value (not $ak.existingSecret) }}
{{- fail "apiKeys.value goes into the chart's Secret, which is not created when database.existingSecret is set: put the keys in that Secret (key apiKeys.existingSecretKey) or name another Secret in apiKeys.existingSecret" }}
{{- end }}
{{- if and $v.database.existingSecret $sk.value (not $sk.existingSecret) }}
{{- fail "secretKeys.value goes into the chart's Secret, which is not created when database.existingSecret is set: put the keys in that Secret (key secretKeys.existingSecretKey) or name another Secret in secretKeys.existingSecret" }}
{{- end }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ default .secret $v.database.existingSecret }}
      key: {{ ternary $v.database.existingSecretKey "DATABASE_URL" (not (empty $v.database.existingSecret)) }}
{{- if .apiKeys }}
{{- if $ak.existingSecret }}
- name: DISPATCH_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $ak.existingSecret }}
      key: {{ $ak.existingSecretKey }}
{{- else if $v.database.existingSecret }}
- name: DISPATCH_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret }}
      key: {{ $ak.existingSecretKey }}
      optional: true
{{- else if $ak.value }}
- name: DISPATCH_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: DISPATCH_API_KEYS
{{- end }}
{{- end }}
{{- if $sk.existingSecret }}
- name: DISPATCH_SECRET_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $sk.existingSecret }}
      key: {{ $sk.existingSecretKey }}
{{- else if $v.database.existingSecret }}
- name: DISPATCH_SECRET_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret }}
      key: {{ $sk.existingSecretKey }}
      optional: true
{{- else if $sk.value }}
- name: DISPATCH_SECRET_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: DISPATCH_SECRET_KEYS
{{- end }}
{{- end }}

{{/* Container securityContext shared by every container. */}}
{{- define "dispatch.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
Number of seconds a component's binary may take to stop after SIGTERM: the configured value or
the binary's default. Call with (dict "config" MAP "key" NAME "default" N).
*/}}
{{- define "dispatch.graceSeconds" -}}
{{- $value := index .config .key }}
{{- if kindIs "invalid" $value }}{{ .default }}{{ else }}{{ int $value }}{{ end }}
{{- end }}

{{/*
Annotations that record, for the checkov scan in deploy/check-packaging.sh, the findings this
chart accepts and why (checkov reads `checkov.io/skipN: CHECK=reason`). The image ones vanish
once image.digest pins the image, the NetworkPolicy one once networkPolicy.enabled is on.
Call with (dict "ctx" $ "job" BOOL), and for a Job other than the migration hook "reason" (why
no NetworkPolicy selects its pods).
*/}}
{{- define "dispatch.checkovSkips" -}}
{{- $v := .ctx.Values -}}
{{- $skips := list "CKV_K8S_35=The binaries read DATABASE_URL from the environment (or a TOML file); it comes from a Secret through secretKeyRef, never from a ConfigMap" }}
{{- if not $v.image.digest }}
{{- $skips = append $skips "CKV_K8S_43=Set image.digest to pin the image by digest; by default the release tag (appVersion) is used" }}
{{- $skips = append $skips "CKV_K8S_15=IfNotPresent suits immutable release tags and digests; set image.pullPolicy to Always for mutable tags" }}
{{- end }}
{{- if or .job (not $v.networkPolicy.enabled) }}
{{- $jobReason := default "The migration Job serves nothing and runs before the release's NetworkPolicies exist" .reason }}
{{- $skips = append $skips (ternary (printf "CKV2_K8S_6=%s" $jobReason) "CKV2_K8S_6=NetworkPolicies are optional (networkPolicy.enabled): the right peers depend on the cluster" .job) }}
{{- end }}
{{- range $i, $skip := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end }}

{{/*
The database CA bundle (database.caSecret, key ca.crt), mounted read-only at /etc/dispatch/db-ca
for DATABASE_URL's sslrootcert=/etc/dispatch/db-ca/ca.crt. Nothing when caSecret is empty.
*/}}
{{- define "dispatch.dbCaMount" -}}
{{- if .Values.database.caSecret }}
- name: db-ca
  mountPath: /etc/dispatch/db-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "dispatch.dbCaVolume" -}}
{{- if .Values.database.caSecret }}
- name: db-ca
  secret:
    secretName: {{ .Values.database.caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}
