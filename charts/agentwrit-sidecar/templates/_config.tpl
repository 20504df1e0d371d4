{{- /*
The sidecar's config.yaml, derived from values. Paths and listen addresses come from the pod layout
below (not from values), so the file always agrees with the volumes the pod mounts:

  /etc/agentwrit-sidecar/config.yaml        this file (ConfigMap, subPath; changes roll the pods)
  /etc/agentwrit-sidecar/policies/          policy files (ConfigMap; hot-reloaded)
  /etc/agentwrit-sidecar/broker/<key>       broker public key (Secret or ConfigMap)
  /etc/agentwrit-sidecar/broker-tls/        client certificate and CA for an https broker (TLS Secret)
  /etc/agentwrit-sidecar/ca/ca.crt, ca.key  interception CA (existing Secret)
  /var/run/agentwrit/ca/                    CA certificate + bundle written by the sidecar (emptyDir, read-only in the agent)
  /var/run/agentwrit/secrets/<mountAs>/     connector Secrets
  /var/lib/agentwrit-sidecar/audit/         audit log (emptyDir or PVC)
  /tmp                                      emptyDir (HOME and TMPDIR of the image)
*/ -}}

{{- define "agentwrit-sidecar.paths" -}}
config: /etc/agentwrit-sidecar/config.yaml
policies: /etc/agentwrit-sidecar/policies
brokerKeyDir: /etc/agentwrit-sidecar/broker
brokerTlsDir: /etc/agentwrit-sidecar/broker-tls
caDir: /etc/agentwrit-sidecar/ca
caOutDir: /var/run/agentwrit/ca
caCert: /var/run/agentwrit/ca/ca.crt
caBundle: /var/run/agentwrit/ca/ca-bundle.crt
secretsDir: /var/run/agentwrit/secrets
auditDir: /var/lib/agentwrit-sidecar/audit
auditFile: /var/lib/agentwrit-sidecar/audit/audit.jsonl
{{- end }}

{{- define "agentwrit-sidecar.brokerConfig" -}}
{{- $b := deepCopy .values.broker }}
{{- $key := get $b "publicKey" | default dict }}
{{- $_ := unset $b "publicKey" }}
{{- $paths := include "agentwrit-sidecar.paths" . | fromYaml }}
{{- if and (get $key "secretName") (get $key "configMapName") }}
{{- fail "broker.publicKey: set secretName or configMapName, not both" }}
{{- end }}
{{- if or (get $key "secretName") (get $key "configMapName") }}
{{- $_ := set $b "publicKeyFile" (printf "%s/%s" $paths.brokerKeyDir (get $key "key" | default "broker-public.pem")) }}
{{- end }}
{{- $tls := get $b "tls" | default dict }}
{{- $_ := unset $b "tls" }}
{{- if get $tls "secretName" }}
{{- if not (or (hasPrefix "https://" (get $b "url" | default "")) (hasPrefix "https://" (get $b "jwksUrl" | default ""))) }}
{{- fail "broker.tls.secretName needs an https:// broker.url or broker.jwksUrl" }}
{{- end }}
{{- $_ := set $b "clientCertFile" (printf "%s/tls.crt" $paths.brokerTlsDir) }}
{{- $_ := set $b "clientKeyFile" (printf "%s/tls.key" $paths.brokerTlsDir) }}
{{- if get $tls "caKey" }}
{{- $_ := set $b "caFile" (printf "%s/%s" $paths.brokerTlsDir (get $tls "caKey")) }}
{{- end }}
{{- end }}
{{- $hasKey := or (get $b "publicKeyFile") (get $b "jwksUrl") }}
{{- $verify := get $b "verify" | default "" }}
{{- if and (has $verify (list "offline" "hybrid")) (not $hasKey) }}
{{- fail (printf "broker.verify=%s needs the broker's public key: set broker.publicKey.secretName, broker.publicKey.configMapName or broker.jwksUrl" $verify) }}
{{- end }}
{{- if and (has $verify (list "online" "hybrid")) (not (get $b "url")) }}
{{- fail (printf "broker.verify=%s needs broker.url" $verify) }}
{{- end }}
{{- if and (not $verify) (not $hasKey) (not (get $b "url")) }}
{{- fail "broker: set broker.url (online verification) and/or the broker's public key" }}
{{- end }}
{{- toYaml $b }}
{{- end }}

{{- define "agentwrit-sidecar.configYaml" -}}
{{- $v := .values }}
{{- $paths := include "agentwrit-sidecar.paths" . | fromYaml }}
{{- if eq (int $v.sidecar.ports.proxy) (int $v.sidecar.ports.admin) }}
{{- fail "sidecar.ports.proxy and sidecar.ports.admin must differ" }}
{{- end }}
{{- $cfg := deepCopy (default dict $v.config) }}
{{- $proxy := get $cfg "proxy" | default dict }}
{{- /* Loopback only: nothing outside the pod may use the agent's proxy. */ -}}
{{- $_ := set $proxy "listen" (printf "127.0.0.1:%d" (int $v.sidecar.ports.proxy)) }}
{{- $_ := set $cfg "proxy" $proxy }}
{{- /* All interfaces: kubelet probes and Prometheus reach the admin port on the pod IP ("::" also takes IPv4). */ -}}
{{- $adminHost := ternary "[::]" "0.0.0.0" (eq (toString $v.sidecar.adminAddress) "::") }}
{{- $_ := set $cfg "admin" (dict "listen" (printf "%s:%d" $adminHost (int $v.sidecar.ports.admin))) }}
{{- $_ := set $cfg "broker" (include "agentwrit-sidecar.brokerConfig" . | fromYaml) }}
{{- $_ := set $cfg "policies" (list $paths.policies) }}
{{- $audit := get $cfg "audit" | default dict }}
{{- $_ := set $audit "path" (ternary "-" $paths.auditFile $v.auditLog.stdout) }}
{{- /* Standard output is not a file: nothing to rotate. */ -}}
{{- if $v.auditLog.stdout }}{{- $_ := unset $audit "rotateBytes" }}{{- $_ := unset $audit "rotateKeep" }}{{- end }}
{{- $_ := set $cfg "audit" $audit }}
{{- $tls := get $cfg "tls" | default dict }}
{{- if $v.ca.existingSecret.name }}
{{- $_ := set $tls "caDir" $paths.caDir }}
{{- end }}
{{- $_ := set $tls "caCertOut" $paths.caCert }}
{{- $_ := set $tls "bundleOut" $paths.caBundle }}
{{- $_ := set $cfg "tls" $tls }}
{{- toYaml $cfg }}
{{- end }}

{{- /* Hosts the inline policies govern: forward-proxy route hosts and pass-through hosts. */ -}}
{{- define "agentwrit-sidecar.governedHosts" -}}
{{- $hosts := list }}
{{- range $file, $doc := .values.policies.files }}
{{- range (get $doc "routes" | default list) }}
{{- if get . "host" }}{{ $hosts = append $hosts (lower .host) }}{{ end }}
{{- end }}
{{- range (get $doc "passThrough" | default list) }}
{{- $hosts = append $hosts (lower .host) }}
{{- end }}
{{- end }}
{{- toJson (uniq $hosts) }}
{{- end }}

{{- /*
Whether a NO_PROXY entry in CIDR form covers an IP-literal host (curl, Go and Python requests all
read CIDR entries): "true" or empty. IPv4 is computed; an IPv6 CIDR next to any IP host counts as
covering it (it cannot be checked here, and Go matches IPv4 addresses against ::ffff:0:0/96 and
::/0), so rendering fails and an address list is asked for.
*/ -}}
{{- define "agentwrit-sidecar.cidrCovers" -}}
{{- $ipv4 := "^[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}$" }}
{{- if contains "/" .entry }}
{{- $net := first (splitList "/" .entry) }}
{{- $bits := atoi (last (splitList "/" .entry)) }}
{{- if and (regexMatch $ipv4 .host) (regexMatch $ipv4 $net) (le $bits 32) }}
{{- $block := 1 }}
{{- range until (sub 32 $bits | int) }}{{ $block = mul $block 2 }}{{ end }}
{{- $h := splitList "." .host }}
{{- $m := splitList "." $net }}
{{- $hv := add (mul (atoi (index $h 0)) 16777216) (mul (atoi (index $h 1)) 65536) (mul (atoi (index $h 2)) 256) (atoi (index $h 3)) }}
{{- $mv := add (mul (atoi (index $m 0)) 16777216) (mul (atoi (index $m 1)) 65536) (mul (atoi (index $m 2)) 256) (atoi (index $m 3)) }}
{{- if eq (div $hv $block) (div $mv $block) }}true{{ end }}
{{- else if and (contains ":" $net) (or (contains ":" .host) (regexMatch $ipv4 .host)) }}true
{{- end }}
{{- end }}
{{- end }}

{{- /*
NO_PROXY for the agent. It must never cover a host a policy governs, or the agent would reach that
host directly (without the sidecar's credential, and without its policy): rendering fails instead.
*/ -}}
{{- define "agentwrit-sidecar.noProxy" -}}
{{- $v := .values }}
{{- $np := $v.proxyEnv.noProxy }}
{{- $e := list }}
{{- if $np.loopback }}
{{- $e = concat $e (list "localhost" "127.0.0.1" "::1") }}
{{- end }}
{{- if $np.clusterDNS }}
{{- $e = concat $e (list ".svc" (printf ".%s" $np.clusterDomain)) }}
{{- end }}
{{- if $np.kubernetesAPI }}
{{- /* $(KUBERNETES_SERVICE_HOST) is expanded by the kubelet: in-cluster clients dial the API by that IP. */ -}}
{{- $e = concat $e (list "kubernetes.default.svc" (printf "kubernetes.default.svc.%s" $np.clusterDomain) "kubernetes.default" "$(KUBERNETES_SERVICE_HOST)") }}
{{- end }}
{{- if $np.broker }}
{{- range (list (get $v.broker "url") (get $v.broker "jwksUrl")) }}
{{- if . }}{{ $e = append $e (urlParse .).hostname }}{{ end }}
{{- end }}
{{- end }}
{{- $e = uniq (concat $e $np.extra) }}
{{- range $h := include "agentwrit-sidecar.governedHosts" . | fromJsonArray }}
{{- $base := trimPrefix "*." $h }}
{{- range $entry := $e }}
{{- $n := lower $entry | trimPrefix "*" | trimPrefix "." }}
{{- if or (eq $entry "*") (eq $base $n) (hasSuffix (printf ".%s" $n) $base) (and (hasPrefix "*." $h) (hasSuffix (printf ".%s" $base) $n)) (include "agentwrit-sidecar.cidrCovers" (dict "entry" $n "host" $base)) }}
{{- fail (printf "NO_PROXY entry %q covers %q, a host governed by the policies: the agent would bypass the sidecar. Remove it from proxyEnv.noProxy.extra or turn off the proxyEnv.noProxy switch that adds it." $entry $h) }}
{{- end }}
{{- end }}
{{- end }}
{{- join "," $e }}
{{- end }}

{{- define "agentwrit-sidecar.validate" -}}
{{- $v := .values }}
{{- if $v.proxyEnv.proxy }}
{{- $_ := include "agentwrit-sidecar.noProxy" . }}
{{- end }}
{{- if and $v.policies.existingConfigMap (gt (len $v.policies.files) 0) }}
{{- fail "policies: set files or existingConfigMap, not both" }}
{{- end }}
{{- $seen := dict }}
{{- range $v.secrets }}
{{- if hasKey $seen .mountAs }}
{{- fail (printf "secrets: mountAs %q is used twice" .mountAs) }}
{{- end }}
{{- $_ := set $seen .mountAs true }}
{{- end }}
{{- if and $v.auditLog.existingClaim (not $v.auditLog.stdout) $v.workload.enabled (eq $v.workload.kind "Deployment") (gt (int $v.workload.replicas) 1) }}
{{- fail "auditLog.existingClaim holds the audit log of one pod (its lock lets one writer in): workload.replicas must be 1" }}
{{- end }}
{{- /* The chart's own pod only: a parent chart's pod has its own grace period, which this cannot see. */ -}}
{{- if $v.workload.enabled }}
{{- $grace := toString (dig "shutdown" "grace" "10s" (default dict $v.config)) }}
{{- $graceSeconds := float64 (include "agentwrit-sidecar.durationSeconds" $grace) }}
{{- if ge $graceSeconds (float64 $v.terminationGracePeriodSeconds) }}
{{- fail (printf "config.shutdown.grace (%s) must be shorter than terminationGracePeriodSeconds (%d): the kubelet kills the pod when that runs out, in the middle of the sidecar's drain" $grace (int $v.terminationGracePeriodSeconds)) }}
{{- end }}
{{- if and (not (include "agentwrit-sidecar.nativeSidecar" .)) (ge (addf $graceSeconds (float64 $v.sidecar.stopAfterAgentSeconds)) (float64 $v.terminationGracePeriodSeconds)) }}
{{- fail (printf "sidecar.stopAfterAgentSeconds (%d) plus config.shutdown.grace (%s) must be shorter than terminationGracePeriodSeconds (%d)" (int $v.sidecar.stopAfterAgentSeconds) $grace (int $v.terminationGracePeriodSeconds)) }}
{{- end }}
{{- end }}
{{- range $name, $m := dict "serviceMonitor" $v.monitors.serviceMonitor "podMonitor" $v.monitors.podMonitor }}
{{- if and $m.interval $m.scrapeTimeout (gt (float64 (include "agentwrit-sidecar.durationSeconds" $m.scrapeTimeout)) (float64 (include "agentwrit-sidecar.durationSeconds" $m.interval))) }}
{{- fail (printf "monitors.%s: scrapeTimeout (%s) is longer than interval (%s), which Prometheus refuses" $name $m.scrapeTimeout $m.interval) }}
{{- end }}
{{- end }}
{{- range $v.extraVolumes }}
{{- if or (hasPrefix "agentwrit-" .name) (eq .name "agent-tmp") }}
{{- fail (printf "extraVolumes: the name %q is the chart's own (agentwrit-*, agent-tmp); choose another" .name) }}
{{- end }}
{{- end }}
{{- if and $v.workload.enabled (eq $v.agent.name $v.sidecar.name) }}
{{- fail (printf "agent.name and sidecar.name are both %q: the pod's containers need names of their own" $v.agent.name) }}
{{- end }}
{{- if and (hasKey $v.pdb "minAvailable") (hasKey $v.pdb "maxUnavailable") }}
{{- fail "pdb: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- end }}

{{- /*
Seconds in a duration: a bare number is seconds (the sidecar's durations may be written so);
otherwise the sum of its parts, each a number and a unit (10s, 1.5m, and Prometheus' 1m30s).
*/ -}}
{{- define "agentwrit-sidecar.durationSeconds" -}}
{{- $text := toString . }}
{{- if regexMatch "^[0-9.]+$" $text }}
{{- float64 $text }}
{{- else }}
{{- $factors := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 "w" 604800.0 "y" 31536000.0 }}
{{- $total := 0.0 }}
{{- range (regexFindAll "[0-9]+(\\.[0-9]+)?(ms|y|w|d|h|m|s)" $text -1) }}
{{- $total = addf $total (mulf (float64 (regexFind "^[0-9.]+" .)) (get $factors (regexReplaceAll "^[0-9.]+" . ""))) }}
{{- end }}
{{- $total }}
{{- end }}
{{- end }}
