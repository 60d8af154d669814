{{/* Names, labels and the pieces every workload shares. */}}

{{- define "clipsearch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "clipsearch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's resources: "<fullname>-<component>". */}}
{{- define "clipsearch.componentName" -}}
{{- printf "%s-%s" (include "clipsearch.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "clipsearch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clipsearch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "clipsearch.labels" -}}
{{ include "clipsearch.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: clipsearch
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "clipsearch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "clipsearch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag[@digest]; the tag defaults to the chart's appVersion. */}}
{{- define "clipsearch.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- $ref := printf "%s:%s" .repository $tag -}}
{{- if .image.digest -}}{{- $ref = printf "%s@%s" $ref .image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "clipsearch.workerRepository" -}}
{{- if .Values.worker.image.repository -}}
{{- .Values.worker.image.repository -}}
{{- else if gt (int .Values.worker.gpus) 0 -}}
clipsearch/worker-gpu
{{- else -}}
clipsearch/worker-cpu
{{- end -}}
{{- end -}}

{{/* Services the clipsearch processes reach. */}}
{{- define "clipsearch.qdrantUrl" -}}
{{- if .Values.qdrant.enabled -}}
{{- printf "http://%s:6333" (include "clipsearch.componentName" (dict "root" . "component" "qdrant")) -}}
{{- else -}}
{{- .Values.qdrant.external.url -}}
{{- end -}}
{{- end -}}

{{- define "clipsearch.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- include "clipsearch.componentName" (dict "root" . "component" "redis") -}}
{{- else -}}
{{- .Values.redis.external.host -}}
{{- end -}}
{{- end -}}

{{- define "clipsearch.redisPort" -}}
{{- if .Values.redis.enabled }}6379{{ else }}{{ .Values.redis.external.port }}{{ end -}}
{{- end -}}

{{- define "clipsearch.redisConfigured" -}}
{{- if or .Values.redis.enabled .Values.redis.external.host }}true{{ end -}}
{{- end -}}

{{/* The broker URL; with a password it names $(REDIS_PASSWORD), set just before it. */}}
{{- define "clipsearch.brokerUrl" -}}
{{- $scheme := ternary "rediss" "redis" (and (not .Values.redis.enabled) .Values.redis.external.tls) -}}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" (ne .Values.redis.existingSecret "") -}}
{{- printf "%s://%s%s:%s/%d" $scheme $auth (include "clipsearch.redisHost" .) (include "clipsearch.redisPort" .) (int .Values.redis.database) -}}
{{- end -}}

{{/* One endpoint per worker pod: the clients balance over the list (one channel each). */}}
{{- define "clipsearch.encoderEndpoints" -}}
{{- if .Values.worker.enabled -}}
{{- $name := include "clipsearch.componentName" (dict "root" . "component" "worker") -}}
{{- $endpoints := list -}}
{{- range $i := until (int .Values.worker.replicas) -}}
{{- $endpoints = append $endpoints (printf "%s-%d.%s:%d" $name $i $name (int $.Values.worker.port)) -}}
{{- end -}}
{{- join "," $endpoints -}}
{{- else -}}
{{- join "," .Values.config.externalEncoderEndpoints -}}
{{- end -}}
{{- end -}}

{{/* Settings every clipsearch process reads (ConfigMap data). */}}
{{- define "clipsearch.commonConfig" -}}
CLIPSEARCH_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
CLIPSEARCH_DATA_DIR: "/var/lib/clipsearch"
{{- if .Values.config.bundle }}
CLIPSEARCH_BUNDLE: {{ .Values.config.bundle | quote }}
{{- end }}
{{- end -}}

{{/* Settings of the processes that search, ingest and write: the gateway and the indexers. */}}
{{- define "clipsearch.clientConfig" -}}
{{ include "clipsearch.commonConfig" . }}
CLIPSEARCH_COLLECTION: {{ .Values.config.collection | quote }}
{{- with include "clipsearch.qdrantUrl" . }}
CLIPSEARCH_QDRANT__URL: {{ . | quote }}
{{- end }}
{{- with include "clipsearch.encoderEndpoints" . }}
CLIPSEARCH_ENCODER__ENDPOINTS: {{ . | quote }}
{{- end }}
CLIPSEARCH_ENCODER__REQUEST_TIMEOUT_S: {{ .Values.config.requestTimeoutS | quote }}
{{- with .Values.config.allowedRoots }}
CLIPSEARCH_SOURCES__ALLOWED_ROOTS: {{ join "," . | quote }}
{{- end }}
{{- with .Values.config.allowedNetworks }}
CLIPSEARCH_SOURCES__ALLOWED_NETWORKS: {{ join "," . | quote }}
{{- end }}
CLIPSEARCH_LIMITS__MAX_UPLOAD_BYTES: {{ .Values.config.maxUploadBytes | int64 | quote }}
CLIPSEARCH_VIDEO__SEGMENTING: {{ .Values.config.videoSegmenting | quote }}
{{- end -}}

{{/* Environment from Secrets (never read by the chart itself: existingSecret only). */}}
{{- define "clipsearch.secretEnv" -}}
{{- if .Values.qdrant.existingSecret }}
- name: CLIPSEARCH_QDRANT__API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.qdrant.existingSecret }}
      key: {{ .Values.qdrant.secretKey }}
{{- end }}
{{- if include "clipsearch.redisConfigured" . }}
{{- if .Values.redis.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.secretKey }}
{{- end }}
- name: CLIPSEARCH_BROKER__URL
  value: {{ include "clipsearch.brokerUrl" . | quote }}
{{- end }}
{{- end -}}

{{/* Where the gateway reads its API keys: the auth.existingSecret key, mounted as a file. */}}
{{- define "clipsearch.apiKeysDir" -}}
/etc/clipsearch/auth
{{- end -}}

{{- define "clipsearch.apiKeysFile" -}}
{{ include "clipsearch.apiKeysDir" . }}/api-keys
{{- end -}}

{{- define "clipsearch.authEnv" -}}
- name: CLIPSEARCH_AUTH__API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.auth.existingSecret }}
      key: {{ .Values.auth.secretKey }}
{{- end -}}

{{/* Pod-level pieces. */}}
{{- define "clipsearch.podSpecCommon" -}}
serviceAccountName: {{ include "clipsearch.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "clipsearch.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Writable paths under a read-only root filesystem. */}}
{{- define "clipsearch.dataVolumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  {{- $claim := include "clipsearch.sharedDataClaim" .root }}
  {{- if and .shared $claim }}
  persistentVolumeClaim:
    claimName: {{ $claim }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- with .root.Values.bundles.existingClaim }}
- name: bundles
  persistentVolumeClaim:
    claimName: {{ . }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* The claim the gateways share as their data dir: an existing one, the chart's own, or none. */}}
{{- define "clipsearch.sharedDataClaim" -}}
{{- if .Values.sharedData.existingClaim -}}
{{- .Values.sharedData.existingClaim -}}
{{- else if .Values.sharedData.create -}}
{{- include "clipsearch.componentName" (dict "root" . "component" "shared-data") -}}
{{- end -}}
{{- end -}}

{{/* More than one gateway must answer every request alike: records in Redis, one store, one
thumbnails volume. */}}
{{- define "clipsearch.checkReplicas" -}}
{{- $g := .Values.gateway -}}
{{- if or $g.autoscaling.enabled (gt (int $g.replicas) 1) -}}
{{- if not (include "clipsearch.redisConfigured" .) -}}
{{- fail "more than one gateway replica needs Redis (redis.enabled or redis.external.host): job and rollout records and rollout leases live there; or set gateway.replicas=1" -}}
{{- end -}}
{{- if not (or .Values.qdrant.enabled .Values.qdrant.external.url) -}}
{{- fail "more than one gateway replica needs a Qdrant server (qdrant.enabled or qdrant.external.url): the embedded store serves one process; or set gateway.replicas=1" -}}
{{- end -}}
{{- if not (include "clipsearch.sharedDataClaim" .) -}}
{{- fail "more than one gateway replica needs a shared data volume (sharedData.create or sharedData.existingClaim, ReadWriteMany): every replica serves every thumbnail from it; or set gateway.replicas=1" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "clipsearch.dataMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/clipsearch
{{- if .Values.bundles.existingClaim }}
- name: bundles
  mountPath: {{ .Values.bundles.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* A ConfigMap's data: the settings given, then config.extraEnv, then the component's own
extraEnv (later wins; one key each, sorted). */}}
{{- define "clipsearch.configData" -}}
{{- $data := fromYaml .settings -}}
{{- $data = mergeOverwrite $data (deepCopy .root.Values.config.extraEnv) (deepCopy .extraEnv) -}}
{{- range $name, $value := $data }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* sha256 of a rendered template: a pod annotation that rolls the pods when it changes. */}}
{{- define "clipsearch.checksum" -}}
{{- include (print .root.Template.BasePath "/" .template) .root | sha256sum -}}
{{- end -}}
