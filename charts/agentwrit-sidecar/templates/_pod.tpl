{{- /* Pod template of the standalone agent workload (Deployment or Job). Context: dict "top" $ "values" .Values. */ -}}
{{- define "agentwrit-sidecar.podTemplate" -}}
{{- $v := .values }}
{{- $native := include "agentwrit-sidecar.nativeSidecar" . -}}
metadata:
  labels:
    {{- include "agentwrit-sidecar.selectorLabels" . | nindent 4 }}
    {{- include "agentwrit-sidecar.podLabels" . | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- include "agentwrit-sidecar.podAnnotations" . | nindent 4 }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "agentwrit-sidecar.serviceAccountName" . | quote }}
  automountServiceAccountToken: {{ $v.serviceAccount.automountToken }}
  {{- if eq $v.workload.kind "Job" }}
  # OnFailure keeps the pod, so the sidecar and its audit log survive an agent retry.
  restartPolicy: OnFailure
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds | int }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $native }}
  initContainers:
    {{- include "agentwrit-sidecar.container" . | nindent 4 }}
  {{- end }}
  containers:
    {{- if not $native }}
    {{- /* First in the list: see holdAgentUntilReady. */ -}}
    {{- include "agentwrit-sidecar.container" . | nindent 4 }}
    {{- end }}
    - name: {{ $v.agent.name | quote }}
      image: {{ printf "%s:%s" $v.agent.image.repository $v.agent.image.tag | quote }}
      imagePullPolicy: {{ $v.agent.image.pullPolicy }}
      {{- with $v.agent.command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.agent.args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      env:
        {{- include "agentwrit-sidecar.agentEnv" . | nindent 8 }}
        {{- with $v.agent.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      resources:
        {{- toYaml $v.agent.resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.agent.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "agentwrit-sidecar.agentVolumeMounts" . | nindent 8 }}
        - name: agent-tmp
          mountPath: /tmp
        {{- with $v.agent.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "agentwrit-sidecar.volumes" . | nindent 4 }}
    - name: agent-tmp
      emptyDir: {}
    {{- with $v.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
