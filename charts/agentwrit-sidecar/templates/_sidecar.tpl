{{- /* The sidecar container, its volumes and the agent's wiring. Context: dict "top" $ "values" <values>. */ -}}

{{- define "agentwrit-sidecar.container" -}}
{{- include "agentwrit-sidecar.validate" . }}
{{- $v := .values }}
{{- $s := $v.sidecar }}
{{- $paths := include "agentwrit-sidecar.paths" . | fromYaml }}
{{- $native := include "agentwrit-sidecar.nativeSidecar" . -}}
- name: {{ $s.name }}
  image: {{ include "agentwrit-sidecar.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $native }}
  # Native sidecar: starts before the agent, keeps running beside it, and stops after it, so Jobs complete.
  restartPolicy: Always
  {{- end }}
  args: ["serve", "--config", {{ $paths.config | quote }}]
  ports:
    - name: http-metrics
      containerPort: {{ $s.ports.admin | int }}
      protocol: TCP
  {{- if or $s.env $s.secretEnv }}
  env:
    {{- with $s.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- range $s.secretEnv }}
    - name: {{ .name | quote }}
      valueFrom:
        secretKeyRef:
          name: {{ .secretName | quote }}
          key: {{ .key | quote }}
    {{- end }}
  {{- end }}
  # /readyz: the first policy generation and the broker key are loaded and the CA files are written.
  startupProbe:
    httpGet:
      path: /readyz
      port: http-metrics
    periodSeconds: {{ $s.probes.startup.periodSeconds }}
    failureThreshold: {{ $s.probes.startup.failureThreshold }}
    timeoutSeconds: {{ $s.probes.startup.timeoutSeconds }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: http-metrics
    periodSeconds: {{ $s.probes.liveness.periodSeconds }}
    failureThreshold: {{ $s.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ $s.probes.liveness.timeoutSeconds }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: http-metrics
    periodSeconds: {{ $s.probes.readiness.periodSeconds }}
    failureThreshold: {{ $s.probes.readiness.failureThreshold }}
    timeoutSeconds: {{ $s.probes.readiness.timeoutSeconds }}
  {{- $hold := and (not $native) $s.holdAgentUntilReady }}
  {{- $linger := and (not $native) (gt (int $s.stopAfterAgentSeconds) 0) }}
  {{- if or $hold $linger }}
  lifecycle:
  {{- end }}
  {{- if $linger }}
    # A regular container gets SIGTERM together with the agent: this hook holds the sidecar's back
    # so the agent's last requests during its own shutdown still find the proxy.
    preStop:
      exec:
        command:
          - node
          - -e
          - {{ printf "setTimeout(()=>{},%d)" (mul 1000 (int $s.stopAfterAgentSeconds)) | quote }}
  {{- end }}
  {{- if $hold }}
    # The kubelet starts containers in order and runs each postStart hook to completion first: the
    # agent (listed after this container) starts only once the proxy is ready and the CA is written.
    postStart:
      exec:
        command:
          - node
          - -e
          - {{ printf "const u='http://127.0.0.1:%d/readyz',end=Date.now()+%d;(async()=>{for(;;){try{if((await fetch(u)).ok)process.exit(0)}catch{}if(Date.now()>end)process.exit(1);await new Promise(r=>setTimeout(r,250))}})()" (int $s.ports.admin) (mul 1000 $s.probes.startup.periodSeconds $s.probes.startup.failureThreshold) | quote }}
  {{- end }}
  resources:
    {{- toYaml $s.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $s.runAsUser | int }}
    runAsGroup: {{ $s.runAsGroup | int }}
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    privileged: false
    capabilities:
      drop: ["ALL"]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - name: agentwrit-config
      mountPath: {{ $paths.config }}
      subPath: config.yaml
      readOnly: true
    - name: agentwrit-policies
      mountPath: {{ $paths.policies }}
      readOnly: true
    {{- if or $v.broker.publicKey.secretName $v.broker.publicKey.configMapName }}
    - name: agentwrit-broker-key
      mountPath: {{ $paths.brokerKeyDir }}
      readOnly: true
    {{- end }}
    {{- if dig "tls" "secretName" "" $v.broker }}
    - name: agentwrit-broker-tls
      mountPath: {{ $paths.brokerTlsDir }}
      readOnly: true
    {{- end }}
    {{- if $v.ca.existingSecret.name }}
    - name: agentwrit-ca
      mountPath: {{ $paths.caDir }}
      readOnly: true
    {{- end }}
    - name: agentwrit-ca-out
      mountPath: {{ $paths.caOutDir }}
    {{- range $v.secrets }}
    - name: {{ printf "agentwrit-secret-%s" .mountAs }}
      mountPath: {{ printf "%s/%s" $paths.secretsDir .mountAs }}
      readOnly: true
    {{- end }}
    {{- if not $v.auditLog.stdout }}
    - name: agentwrit-audit
      mountPath: {{ $paths.auditDir }}
    {{- end }}
    - name: agentwrit-tmp
      mountPath: /tmp
    {{- with $s.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "agentwrit-sidecar.volumes" -}}
{{- $v := .values -}}
- name: agentwrit-config
  configMap:
    name: {{ include "agentwrit-sidecar.configMapName" . | quote }}
- name: agentwrit-policies
  configMap:
    name: {{ include "agentwrit-sidecar.policiesConfigMapName" . | quote }}
{{- with $v.broker.publicKey }}
{{- if .secretName }}
- name: agentwrit-broker-key
  secret:
    secretName: {{ .secretName | quote }}
    defaultMode: {{ $v.sidecar.secretFileMode | int }}
    items:
      - key: {{ .key }}
        path: {{ .key }}
{{- else if .configMapName }}
- name: agentwrit-broker-key
  configMap:
    name: {{ .configMapName | quote }}
    items:
      - key: {{ .key }}
        path: {{ .key }}
{{- end }}
{{- end }}
{{- with dig "tls" "secretName" "" $v.broker }}
- name: agentwrit-broker-tls
  secret:
    secretName: {{ . | quote }}
    defaultMode: {{ $v.sidecar.secretFileMode | int }}
{{- end }}
{{- with $v.ca.existingSecret }}
{{- if .name }}
- name: agentwrit-ca
  secret:
    secretName: {{ .name | quote }}
    defaultMode: {{ $v.sidecar.secretFileMode | int }}
    # Whatever the Secret calls them (cert-manager: tls.crt/tls.key), the sidecar reads ca.crt and ca.key.
    items:
      - key: {{ .certKey }}
        path: ca.crt
      - key: {{ .keyKey }}
        path: ca.key
{{- end }}
{{- end }}
# Written by the sidecar (CA certificate and bundle, never the key); mounted read-only by the agent.
- name: agentwrit-ca-out
  emptyDir:
    medium: Memory
    sizeLimit: 8Mi
{{- range $v.secrets }}
- name: {{ printf "agentwrit-secret-%s" .mountAs }}
  secret:
    secretName: {{ .name | quote }}
    defaultMode: {{ $v.sidecar.secretFileMode | int }}
    {{- if .optional }}
    optional: true
    {{- end }}
{{- end }}
{{- if not $v.auditLog.stdout }}
- name: agentwrit-audit
  {{- if $v.auditLog.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $v.auditLog.existingClaim | quote }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ $v.auditLog.sizeLimit }}
  {{- end }}
{{- end }}
- name: agentwrit-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- end }}

{{- define "agentwrit-sidecar.agentEnv" -}}
{{- include "agentwrit-sidecar.agentEnvItems" . | trim }}
{{- end }}

{{- define "agentwrit-sidecar.agentEnvItems" -}}
{{- $v := .values }}
{{- $paths := include "agentwrit-sidecar.paths" . | fromYaml }}
{{- if $v.proxyEnv.proxy }}
{{- /* No token in the URL: the agent adds its own per request (Proxy-Authorization) or at runtime (user-info). */ -}}
{{- $proxy := printf "http://127.0.0.1:%d" (int $v.sidecar.ports.proxy) }}
{{- $noProxy := include "agentwrit-sidecar.noProxy" . }}
{{- /* Both cases: curl reads only lower-case http_proxy, some clients only upper case. */ -}}
{{- range (list "HTTP_PROXY" "http_proxy" "HTTPS_PROXY" "https_proxy") }}
- name: {{ . }}
  value: {{ $proxy | quote }}
{{- end }}
{{- range (list "NO_PROXY" "no_proxy") }}
- name: {{ . }}
  value: {{ $noProxy | quote }}
{{- end }}
{{- if $v.proxyEnv.nodeUseEnvProxy }}
- name: NODE_USE_ENV_PROXY
  value: "1"
{{- end }}
{{- end }}
{{- range $v.proxyEnv.caBundleVars }}
- name: {{ . }}
  value: {{ $paths.caBundle }}
{{- end }}
{{- range $v.proxyEnv.caCertVars }}
- name: {{ . }}
  value: {{ $paths.caCert }}
{{- end }}
{{- end }}

{{- define "agentwrit-sidecar.agentVolumeMounts" -}}
{{- $paths := include "agentwrit-sidecar.paths" . | fromYaml -}}
- name: agentwrit-ca-out
  mountPath: {{ $paths.caOutDir }}
  readOnly: true
{{- end }}
