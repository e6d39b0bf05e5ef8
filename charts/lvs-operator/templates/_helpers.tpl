{{/*
Names and labels shared by every template. Objects are named <fullname>-controller and
<fullname>-agent; with the release name lvs-operator, fullname is just "lvs-operator".
*/}}

{{- define "lvs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lvs-operator.fullname" -}}
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

{{- define "lvs-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "lvs-operator.labels" -}}
helm.sh/chart: {{ include "lvs-operator.chart" . }}
app.kubernetes.io/name: {{ include "lvs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lvs-operator
{{- end }}

{{/* Selector labels of one role; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "lvs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lvs-operator.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one role's objects; same arguments as selectorLabels. */}}
{{- define "lvs-operator.componentLabels" -}}
{{ include "lvs-operator.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "lvs-operator.controller.fullname" -}}
{{- printf "%s-controller" (include "lvs-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lvs-operator.agent.fullname" -}}
{{- printf "%s-agent" (include "lvs-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lvs-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Flags both roles take. */}}
{{- define "lvs-operator.logArgs" -}}
- --log-level={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
{{- end }}
