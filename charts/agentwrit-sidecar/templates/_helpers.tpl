{{- /*
Named templates of the agentwrit-sidecar chart.

Every template here takes a context dict with two keys, so that another chart can include them:
  top:    the root context ($) of the chart that renders the pod
  values: this chart's values (standalone: .Values; as a dependency: index .Values "agentwrit-sidecar")

Public (stable) templates for other charts, see README "Use from another chart":
  agentwrit-sidecar.container           the sidecar container (one list item)
  agentwrit-sidecar.volumes             the pod volumes the sidecar and the agent mount (list items)
  agentwrit-sidecar.agentEnv            HTTP(S)_PROXY, NO_PROXY and CA variables for the agent (list items)
  agentwrit-sidecar.agentVolumeMounts   the read-only CA mount for the agent (list items)
  agentwrit-sidecar.nativeSidecar       "true" when the sidecar belongs in initContainers, else ""
  agentwrit-sidecar.podAnnotations      config checksum and prometheus.io annotations (map entries)
  agentwrit-sidecar.podLabels           the label monitors select the pod by (map entries)

Example (a parent chart that lists agentwrit-sidecar as a dependency with workload.enabled: false):

  {{- $aw := dict "top" $ "values" (index .Values "agentwrit-sidecar") }}
  spec:
    template:
      metadata:
        labels:
          {{- include "agentwrit-sidecar.podLabels" $aw | nindent 10 }}
        annotations:
          {{- include "agentwrit-sidecar.podAnnotations" $aw | nindent 10 }}
      spec:
        {{- if include "agentwrit-sidecar.nativeSidecar" $aw }}
        initContainers:
          {{- include "agentwrit-sidecar.container" $aw | nindent 10 }}
        {{- end }}
        containers:
          {{- if not (include "agentwrit-sidecar.nativeSidecar" $aw) }}
          {{- include "agentwrit-sidecar.container" $aw | nindent 10 }}
          {{- end }}
          - name: app
            image: example/agent:1.0
            env:
              {{- include "agentwrit-sidecar.agentEnv" $aw | nindent 14 }}
            volumeMounts:
              {{- include "agentwrit-sidecar.agentVolumeMounts" $aw | nindent 14 }}
        volumes:
          {{- include "agentwrit-sidecar.volumes" $aw | nindent 10 }}
*/ -}}

{{- /* Default image tag: this chart's appVersion, also when the including chart has its own. Kept equal to Chart.yaml by the chart tests. */ -}}
{{- define "agentwrit-sidecar.appVersion" -}}0.1.0{{- end }}

{{- define "agentwrit-sidecar.name" -}}
{{- default "agentwrit-sidecar" .values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* Independent of the including chart's name, so a parent computes the same ConfigMap names as this chart. */ -}}
{{- define "agentwrit-sidecar.fullname" -}}
{{- if .values.fullnameOverride }}
{{- .values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "agentwrit-sidecar.name" . }}
{{- if contains $name .top.Release.Name }}
{{- .top.Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .top.Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "agentwrit-sidecar.configMapName" -}}
{{- printf "%s-config" (include "agentwrit-sidecar.fullname" .) }}
{{- end }}

{{- define "agentwrit-sidecar.policiesConfigMapName" -}}
{{- default (printf "%s-policies" (include "agentwrit-sidecar.fullname" .)) .values.policies.existingConfigMap }}
{{- end }}

{{- define "agentwrit-sidecar.metricsServiceName" -}}
{{- printf "%s-metrics" (include "agentwrit-sidecar.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "agentwrit-sidecar.serviceAccountName" -}}
{{- if .values.serviceAccount.create }}
{{- default (include "agentwrit-sidecar.fullname" .) .values.serviceAccount.name }}
{{- else }}
{{- default "default" .values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agentwrit-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentwrit-sidecar.name" . }}
app.kubernetes.io/instance: {{ .top.Release.Name }}
{{- end }}

{{- define "agentwrit-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .top.Chart.Name .top.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agentwrit-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ include "agentwrit-sidecar.appVersion" . | quote }}
app.kubernetes.io/component: {{ get . "component" | default "agent" }}
app.kubernetes.io/part-of: agentwrit
app.kubernetes.io/managed-by: {{ .top.Release.Service }}
{{- end }}

{{- /* Monitors and the metrics Service select pods by this label, so they work for pods of other charts too. */ -}}
{{- define "agentwrit-sidecar.podLabels" -}}
agentwrit-sidecar/instance: {{ include "agentwrit-sidecar.fullname" . }}
{{- end }}

{{- define "agentwrit-sidecar.image" -}}
{{- $img := .values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default (include "agentwrit-sidecar.appVersion" .) $img.tag) }}
{{- end }}
{{- end }}

{{- define "agentwrit-sidecar.nativeSidecar" -}}
{{- $mode := toString .values.sidecar.nativeSidecar }}
{{- if eq $mode "true" }}true
{{- else if eq $mode "false" }}
{{- else if semverCompare ">=1.29.0-0" .top.Capabilities.KubeVersion.Version }}true
{{- end }}
{{- end }}

{{- define "agentwrit-sidecar.podAnnotations" -}}
checksum/agentwrit-config: {{ include "agentwrit-sidecar.configYaml" . | sha256sum }}
{{- if .values.monitors.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .values.sidecar.ports.admin | int | toString | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
