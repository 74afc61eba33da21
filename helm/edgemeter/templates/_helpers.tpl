{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "edgemeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name; "-cluster" (8 characters) is appended to it, so it is kept to 55. */}}
{{- define "edgemeter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "edgemeter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgemeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgemeter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edgemeter.labels" -}}
helm.sh/chart: {{ include "edgemeter.chart" . }}
{{ include "edgemeter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgemeter
{{- end }}

{{- define "edgemeter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "edgemeter.tokenSecretName" -}}
{{- default (include "edgemeter.fullname" .) .Values.openmeter.existingSecret }}
{{- end }}

{{/* Whether OPENMETER_TOKEN is set: a token given here or an existing Secret. */}}
{{- define "edgemeter.hasToken" -}}
{{- if and (eq .Values.sink "openmeter") (or .Values.openmeter.existingSecret .Values.openmeter.token) }}true{{ end }}
{{- end }}

{{/* Mapper file mount point (custom mappers only). */}}
{{- define "edgemeter.mapperDir" -}}/etc/edgemeter/mappers{{- end }}

{{/* Mount points of the Run:ai credentials file and of a custom Run:ai mapper. */}}
{{- define "edgemeter.runaiCredentialsDir" -}}/etc/edgemeter/runai{{- end }}
{{- define "edgemeter.runaiMapperDir" -}}/etc/edgemeter/runai-mappers{{- end }}

{{/* Mount points of the SQL database URL files (one per import, named after it) and of a
     custom SQL mapper. */}}
{{- define "edgemeter.sqlUrlDir" -}}/etc/edgemeter/sql{{- end }}
{{- define "edgemeter.sqlMapperDir" -}}/etc/edgemeter/sql-mappers{{- end }}
{{- define "edgemeter.sqlCaDir" -}}/etc/edgemeter/sql-ca{{- end }}

{{/* SQL_IMPORTS: sql.imports in the daemon's own keys (snake_case), each URL a url_file in
     the mounted Secret volume, as JSON (no HTML escaping, so `<` and `>` stay readable).
     Optional keys are left out when unset, so the daemon's defaults apply. */}}
{{- define "edgemeter.sqlImports" -}}
{{- $dir := include "edgemeter.sqlUrlDir" . }}
{{- $ca := .Values.sql.caBundle }}
{{- $out := list }}
{{- range $i := .Values.sql.imports }}
{{- $cursor := dict "mode" $i.cursor.mode "column" $i.cursor.column }}
{{- if hasKey $i.cursor "lateness" }}{{ $_ := set $cursor "lateness" $i.cursor.lateness }}{{ end }}
{{- $e := dict "name" $i.name "url_file" (printf "%s/%s" $dir $i.name) "query" $i.query "cursor" $cursor }}
{{- with $i.driver }}{{ $_ := set $e "driver" . }}{{ end }}
{{- with $i.key }}{{ $_ := set $e "key" . }}{{ end }}
{{- if hasKey $i "pageSize" }}{{ $_ := set $e "page_size" (int64 $i.pageSize) }}{{ end }}
{{- if hasKey $i "maxRowsPerRound" }}{{ $_ := set $e "max_rows_per_round" (int64 $i.maxRowsPerRound) }}{{ end }}
{{- if or $ca.configMap $ca.secret }}{{ $_ := set $e "ca_file" (printf "%s/%s" (include "edgemeter.sqlCaDir" $) $ca.key) }}{{ end }}
{{- $out = append $out $e }}
{{- end }}
{{- toRawJson $out }}
{{- end }}

{{/* The Secrets holding the SQL URLs, each once, in the order the imports name them. */}}
{{- define "edgemeter.sqlSecrets" -}}
{{- $names := list }}
{{- range $i := .Values.sql.imports }}
{{- $names = append $names (default $.Values.sql.existingSecret $i.existingSecret) }}
{{- end }}
{{- toYaml (uniq $names) }}
{{- end }}

{{/* Queue volume size: explicit, or 1.6 × queue.maxBytes rounded up to whole Mi. */}}
{{- define "edgemeter.queueSize" -}}
{{- if .Values.queue.persistence.size }}
{{- .Values.queue.persistence.size }}
{{- else }}
{{- $bytes := div (mul (int64 .Values.queue.maxBytes) 16) 10 }}
{{- printf "%dMi" (div (add $bytes 1048575) 1048576) }}
{{- end }}
{{- end }}

{{/* Checks that the schema cannot express, each with the fix. */}}
{{- define "edgemeter.validate" -}}
{{- $k := .Values.sources.kubernetes }}
{{- $r := .Values.runai }}
{{- $s := .Values.sql }}
{{- if and (eq .Values.sink "openmeter") (not .Values.openmeter.url) }}
{{- fail "openmeter.url is required (the OpenMeter API base URL): --set openmeter.url=https://openmeter.cloud, or --set sink=stdout to try the chart without OpenMeter" }}
{{- end }}
{{- if and $r.only (not $r.enabled) }}
{{- fail "runai.only=true meters Run:ai alone but runai.enabled is false: set runai.enabled=true (with runai.url and runai.existingSecret), or runai.only=false" }}
{{- end }}
{{- if $r.enabled }}
{{- if not $r.url }}
{{- fail "runai.enabled needs runai.url (the Run:ai control-plane base URL): --set runai.url=https://acme.run.ai" }}
{{- end }}
{{- if not $r.existingSecret }}
{{- fail "runai.enabled needs runai.existingSecret (an existing Secret with the credentials file): kubectl create secret generic runai-credentials --from-file=credentials=runai.json, then --set runai.existingSecret=runai-credentials" }}
{{- end }}
{{- if and $r.only (eq .Values.mode "daemonset") }}
{{- fail "runai.only runs no Kubernetes source, so mode daemonset would have no per-node collectors: use mode deployment (one StatefulSet whose Lease holder bills Run:ai)" }}
{{- end }}
{{- if and (eq $r.mapper.type "configMap") (not $r.mapper.configMap.name) }}
{{- fail "runai.mapper.type configMap needs runai.mapper.configMap.name (an existing ConfigMap holding the .wasm in binaryData)" }}
{{- end }}
{{- if eq $r.mapper.type "image" }}
{{- if not $r.mapper.image.reference }}
{{- fail "runai.mapper.type image needs runai.mapper.image.reference (the OCI image holding the .wasm)" }}
{{- end }}
{{- if semverCompare "<1.31.0-0" .Capabilities.KubeVersion.Version }}
{{- fail (printf "runai.mapper.type image needs Kubernetes 1.31 or later (image volumes); this cluster is %s: use runai.mapper.type configMap" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $s.only (not $s.enabled) }}
{{- fail "sql.only=true meters SQL without the Kubernetes source but sql.enabled is false: set sql.enabled=true (with sql.imports and sql.existingSecret), or sql.only=false" }}
{{- end }}
{{- if $s.enabled }}
{{- if not $s.imports }}
{{- fail "sql.enabled needs at least one import in sql.imports, e.g. {name: api_calls, query: 'SELECT * FROM api_calls WHERE id > $1 AND id <= $2', cursor: {mode: sequence, column: id}}" }}
{{- end }}
{{- $seen := dict }}
{{- range $i := $s.imports }}
{{- if hasKey $seen $i.name }}
{{- fail (printf "sql.imports: the name %s is used twice; names must be unique (each is an event type and an id namespace)" $i.name) }}
{{- end }}
{{- $_ := set $seen $i.name true }}
{{- if not (default $s.existingSecret $i.existingSecret) }}
{{- fail (printf "sql.imports %s needs a Secret with its database URL: kubectl create secret generic billing-db --from-literal=%s=postgres://user:password@host:5432/db, then --set sql.existingSecret=billing-db (or set existingSecret on the import)" $i.name (default $i.name $i.existingSecretKey)) }}
{{- end }}
{{- end }}
{{- if and $s.caBundle.configMap $s.caBundle.secret }}
{{- fail "sql.caBundle: set configMap or secret, not both" }}
{{- end }}
{{- if and $s.only (eq .Values.mode "daemonset") }}
{{- fail "sql.only runs no Kubernetes source, so mode daemonset would have no per-node collectors: use mode deployment (one StatefulSet whose Lease holder bills the SQL imports)" }}
{{- end }}
{{- if and (eq $s.mapper.type "configMap") (not $s.mapper.configMap.name) }}
{{- fail "sql.mapper.type configMap needs sql.mapper.configMap.name (an existing ConfigMap holding the .wasm in binaryData)" }}
{{- end }}
{{- if eq $s.mapper.type "image" }}
{{- if not $s.mapper.image.reference }}
{{- fail "sql.mapper.type image needs sql.mapper.image.reference (the OCI image holding the .wasm)" }}
{{- end }}
{{- if semverCompare "<1.31.0-0" .Capabilities.KubeVersion.Version }}
{{- fail (printf "sql.mapper.type image needs Kubernetes 1.31 or later (image volumes); this cluster is %s: use sql.mapper.type configMap" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Secrets come from Secrets: a literal Run:ai secret in extraEnv would sit in the release
       history and in the pod spec, and would conflict with the mounted credentials file. */}}
{{- range .Values.extraEnv }}
{{- if and (has .name (list "RUNAI_CLIENT_SECRET" "RUNAI_APP_SECRET")) (hasKey . "value") }}
{{- fail (printf "extraEnv sets %s as a literal value: put the Run:ai credentials in a Secret and set runai.existingSecret (the chart mounts it as RUNAI_CREDENTIALS_FILE)" .name) }}
{{- end }}
{{- /* A database URL carries its password: it comes from a Secret file (sql.existingSecret),
       never from a literal. SQL_IMPORTS is the chart's: it would reach every collector. */}}
{{- if and (hasKey . "value") (regexMatch "(?i)^\\s*postgres(ql)?://" (toString .value)) }}
{{- fail (printf "extraEnv sets %s to a literal database URL: put it in a Secret and set sql.existingSecret (the chart mounts it as a file each import reads with url_file)" .name) }}
{{- end }}
{{- if eq .name "SQL_IMPORTS" }}
{{- fail "extraEnv sets SQL_IMPORTS: list the imports in sql.imports (with sql.enabled=true), which renders SQL_IMPORTS for the one collector that bills them, with the URLs from sql.existingSecret" }}
{{- end }}
{{- end }}
{{- if not (or $r.enabled $s.enabled (and (not $r.only) (not $s.only) (or $k.pods $k.pvcs))) }}
{{- fail "nothing to meter: enable sources.kubernetes.pods or sources.kubernetes.pvcs, runai.enabled or sql.enabled" }}
{{- end }}
{{- if and (eq .Values.mode "daemonset") (not $k.pods) }}
{{- fail "mode daemonset runs one collector per node for that node's pods: enable sources.kubernetes.pods, or use mode deployment to meter PVCs, Run:ai or SQL only" }}
{{- end }}
{{- if and (eq .Values.mode "deployment") (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicas %d without leaderElection.enabled would bill every window %d times: set replicas=1 or leaderElection.enabled=true" (int .Values.replicas) (int .Values.replicas)) }}
{{- end }}
{{- if and (eq .Values.mode "daemonset") (or $k.pvcs $r.enabled $s.enabled) (gt (int .Values.daemonset.cluster.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- $what := list }}
{{- if $k.pvcs }}{{ $what = append $what "PVC" }}{{ end }}
{{- if $r.enabled }}{{ $what = append $what "Run:ai" }}{{ end }}
{{- if $s.enabled }}{{ $what = append $what "SQL" }}{{ end }}
{{- $text := last $what }}
{{- if gt (len $what) 1 }}{{ $text = printf "%s and %s" (join ", " (initial $what)) (last $what) }}{{ end }}
{{- fail (printf "daemonset.cluster.replicas %d without leaderElection.enabled would bill every %s window %d times: set daemonset.cluster.replicas=1 or leaderElection.enabled=true" (int .Values.daemonset.cluster.replicas) $text (int .Values.daemonset.cluster.replicas)) }}
{{- end }}
{{- if and .Values.caBundle.configMap .Values.caBundle.secret }}
{{- fail "caBundle: set configMap or secret, not both" }}
{{- end }}
{{- if and (eq .Values.mapper.type "configMap") (not .Values.mapper.configMap.name) }}
{{- fail "mapper.type configMap needs mapper.configMap.name (an existing ConfigMap holding the .wasm in binaryData)" }}
{{- end }}
{{- if eq .Values.mapper.type "image" }}
{{- if not .Values.mapper.image.reference }}
{{- fail "mapper.type image needs mapper.image.reference (the OCI image holding the .wasm)" }}
{{- end }}
{{- if semverCompare "<1.31.0-0" .Capabilities.KubeVersion.Version }}
{{- fail (printf "mapper.type image needs Kubernetes 1.31 or later (image volumes); this cluster is %s: use mapper.type configMap" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create=false needs serviceAccount.name (an existing ServiceAccount; in mode daemonset also <name>-cluster)" }}
{{- end }}
{{- end }}

{{/*
The workloads of this release, as a YAML list. Each one has its own ServiceAccount, RBAC,
headless Service and (for StatefulSets) PodDisruptionBudget:
  key             collector | cluster
  kind            StatefulSet | DaemonSet
  name            object name
  component       app.kubernetes.io/component
  kinds           what its Kubernetes source meters (EDGEMETER_KINDS); empty: no Kubernetes source
  sources         the sources it runs (EDGEMETER_SOURCES): kubernetes when kinds, runai, sql
  runai           whether it runs the Run:ai source. Run:ai is cluster-wide: it runs only in
                  the workload billing cluster-wide things under the Lease (the StatefulSet,
                  or <fullname>-cluster in mode daemonset), never in the per-node DaemonSet
  sql             whether it runs the SQL source: the same workload as Run:ai, for the same
                  reason (a row billed per node would be billed once per node)
  leaderElection  whether it holds a Lease to bill
  replicas        StatefulSet replicas
  serviceAccount  ServiceAccount name
*/}}
{{- define "edgemeter.workloads" -}}
{{- $full := include "edgemeter.fullname" . }}
{{- $sa := default $full .Values.serviceAccount.name }}
{{- $k := .Values.sources.kubernetes }}
{{- $runai := and .Values.runai.enabled true }}
{{- $sql := and .Values.sql.enabled true }}
{{- $kube := not (or (and $runai .Values.runai.only) (and $sql .Values.sql.only)) }}
{{- $out := list }}
{{- if eq .Values.mode "daemonset" }}
{{- $out = append $out (dict "key" "collector" "kind" "DaemonSet" "name" $full "component" "collector" "kinds" (list "pods") "sources" (list "kubernetes") "runai" false "sql" false "leaderElection" false "serviceAccount" $sa) }}
{{- if or $k.pvcs $runai $sql }}
{{- $kinds := ternary (list "pvcs") (list) (and $k.pvcs true) }}
{{- $sources := ternary (list "kubernetes") (list) (and $k.pvcs true) }}
{{- if $runai }}{{ $sources = append $sources "runai" }}{{ end }}
{{- if $sql }}{{ $sources = append $sources "sql" }}{{ end }}
{{- $out = append $out (dict "key" "cluster" "kind" "StatefulSet" "name" (printf "%s-cluster" $full) "component" "cluster-collector" "kinds" $kinds "sources" $sources "runai" $runai "sql" $sql "leaderElection" (and .Values.leaderElection.enabled true) "replicas" (int .Values.daemonset.cluster.replicas) "serviceAccount" (printf "%s-cluster" $sa)) }}
{{- end }}
{{- else }}
{{- $kinds := list }}
{{- if and $kube $k.pods }}{{ $kinds = append $kinds "pods" }}{{ end }}
{{- if and $kube $k.pvcs }}{{ $kinds = append $kinds "pvcs" }}{{ end }}
{{- $sources := ternary (list "kubernetes") (list) (gt (len $kinds) 0) }}
{{- if $runai }}{{ $sources = append $sources "runai" }}{{ end }}
{{- if $sql }}{{ $sources = append $sources "sql" }}{{ end }}
{{- $out = append $out (dict "key" "collector" "kind" "StatefulSet" "name" $full "component" "collector" "kinds" $kinds "sources" $sources "runai" $runai "sql" $sql "leaderElection" (and .Values.leaderElection.enabled true) "replicas" (int .Values.replicas) "serviceAccount" $sa) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Pod-level security context: non-root 65532 (the image's user), seccomp RuntimeDefault. */}}
{{- define "edgemeter.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "edgemeter.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod template of a workload: (dict "root" $ "w" $workload). */}}
{{- define "edgemeter.podTemplate" -}}
{{- $ := .root }}
{{- $w := .w }}
{{- $v := $.Values }}
{{- $k := $v.sources.kubernetes }}
{{- $mapperDir := include "edgemeter.mapperDir" $ }}
{{- $runaiMapperDir := include "edgemeter.runaiMapperDir" $ }}
{{- $sqlMapperDir := include "edgemeter.sqlMapperDir" $ }}
{{- $kube := has "kubernetes" $w.sources }}
{{- $r := $v.runai }}
{{- $s := $v.sql }}
metadata:
  labels:
    {{- include "edgemeter.selectorLabels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $w.component }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or $v.podAnnotations (and (eq $v.sink "openmeter") $v.openmeter.token (not $v.openmeter.existingSecret)) }}
  annotations:
    {{- if and (eq $v.sink "openmeter") $v.openmeter.token (not $v.openmeter.existingSecret) }}
    checksum/token: {{ $v.openmeter.token | sha256sum }}
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ $w.serviceAccount }}
  # Only the collector talks to the API server; the test pod gets no token.
  automountServiceAccountToken: true
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- include "edgemeter.podSecurityContext" $ | nindent 4 }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $v.affinity }}
  affinity:
    {{- toYaml $v.affinity | nindent 4 }}
  {{- else if eq $w.kind "StatefulSet" }}
  affinity:
    # Replicas on distinct nodes when possible: one node's loss leaves a standby to take the lease.
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "edgemeter.selectorLabels" $ | nindent 16 }}
                app.kubernetes.io/component: {{ $w.component }}
  {{- end }}
  {{- $tolerations := ternary $v.daemonset.tolerations $v.tolerations (eq $w.kind "DaemonSet") }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (eq $w.kind "DaemonSet") $v.daemonset.hostPath.initChown.enabled }}
  initContainers:
    # Root, with CHOWN as its only capability: makes the hostPath queue directory (created
    # root-owned by the kubelet; fsGroup does not apply to hostPath) writable by 65532.
    - name: chown-queue
      {{- $ic := $v.daemonset.hostPath.initChown.image }}
      image: {{ printf "%s:%s" $ic.repository $ic.tag }}
      imagePullPolicy: {{ $ic.pullPolicy }}
      command: ["chown", "65532:65532", "/var/lib/edgemeter/queue"]
      securityContext:
        runAsNonRoot: false
        runAsUser: 0
        runAsGroup: 0
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        privileged: false
        capabilities:
          drop:
            - ALL
          add:
            - CHOWN
        seccompProfile:
          type: RuntimeDefault
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          memory: 32Mi
      volumeMounts:
        - name: queue
          mountPath: /var/lib/edgemeter/queue
  {{- end }}
  containers:
    - name: edgemeter
      image: {{ include "edgemeter.image" $ }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: ["run"]
      ports:
        - name: http
          containerPort: 9464
          protocol: TCP
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: EDGEMETER_COLLECTOR_ID
          value: $(POD_NAME)
        # Set on every collector, so only the one meant to run Run:ai ever does.
        - name: EDGEMETER_SOURCES
          value: {{ join "," $w.sources | quote }}
        {{- if $kube }}
        - name: EDGEMETER_KINDS
          value: {{ join "," $w.kinds | quote }}
        {{- if eq $w.kind "DaemonSet" }}
        - name: SCRAPE_NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        {{- end }}
        {{- with $k.namespaces }}
        - name: SCRAPE_NAMESPACE
          value: {{ join "," . | quote }}
        {{- end }}
        {{- with $k.labelSelector }}
        - name: SCRAPE_LABEL_SELECTOR
          value: {{ . | quote }}
        {{- end }}
        {{- end }}
        - name: SCRAPE_INTERVAL
          value: {{ $v.interval | quote }}
        - name: EDGEMETER_SINK
          value: {{ $v.sink | quote }}
        {{- if eq $v.sink "openmeter" }}
        - name: OPENMETER_URL
          value: {{ $v.openmeter.url | quote }}
        {{- if include "edgemeter.hasToken" $ }}
        - name: OPENMETER_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ include "edgemeter.tokenSecretName" $ }}
              key: {{ ternary $v.openmeter.existingSecretKey "token" (ne $v.openmeter.existingSecret "") }}
        {{- end }}
        {{- if or $v.caBundle.configMap $v.caBundle.secret }}
        - name: OPENMETER_CA_BUNDLE
          value: {{ printf "/etc/edgemeter/ca/%s" $v.caBundle.key | quote }}
        {{- end }}
        - name: OPENMETER_REQUEST_TIMEOUT
          value: {{ $v.openmeter.requestTimeout | quote }}
        - name: BATCH_SIZE
          value: {{ $v.batch.size | quote }}
        - name: BATCH_PERIOD
          value: {{ $v.batch.period | quote }}
        {{- end }}
        - name: EDGEMETER_QUEUE_DIR
          value: /var/lib/edgemeter/queue
        - name: EDGEMETER_QUEUE_MAX_BYTES
          value: {{ int64 $v.queue.maxBytes | quote }}
        # A directory of its own inside the emptyDir: an emptyDir's mount point is mode 0777,
        # and the compiled-mapper cache refuses a directory others can write (it feeds the
        # deserializer); the daemon creates this one 0700.
        - name: EDGEMETER_CACHE_DIR
          value: /var/cache/edgemeter/mappers/compiled
        {{- if $kube }}
        - name: EDGEMETER_MAPPER
          {{- if eq $v.mapper.type "configMap" }}
          value: {{ printf "%s/%s" $mapperDir $v.mapper.configMap.key | quote }}
          {{- else if eq $v.mapper.type "image" }}
          value: {{ printf "%s/%s" $mapperDir $v.mapper.image.path | quote }}
          {{- else }}
          value: {{ printf "builtin:%s" $v.mapper.builtin | quote }}
          {{- end }}
        - name: EDGEMETER_MAPPER_CONFIG
          value: {{ toJson $v.mapper.config | replace "$" "$$" | quote }}
        {{- end }}
        {{- if $w.runai }}
        # Run:ai: credentials from the mounted Secret file, never from a literal value.
        - name: RUNAI_URL
          value: {{ $r.url | quote }}
        - name: RUNAI_CREDENTIALS_FILE
          value: {{ printf "%s/%s" (include "edgemeter.runaiCredentialsDir" $) $r.key | quote }}
        - name: RUNAI_TOKEN_ENDPOINT
          value: {{ $r.tokenEndpoint | quote }}
        - name: RUNAI_MAPPER
          {{- if eq $r.mapper.type "configMap" }}
          value: {{ printf "%s/%s" $runaiMapperDir $r.mapper.configMap.key | quote }}
          {{- else if eq $r.mapper.type "image" }}
          value: {{ printf "%s/%s" $runaiMapperDir $r.mapper.image.path | quote }}
          {{- else }}
          value: {{ printf "builtin:%s" $r.mapper.builtin | quote }}
          {{- end }}
        - name: RUNAI_MAPPER_CONFIG
          value: {{ toJson $r.mapperConfig | replace "$" "$$" | quote }}
        - name: RUNAI_METRICS_DELAY
          value: {{ $r.metricsDelay | quote }}
        - name: RUNAI_SAMPLE_STEP
          value: {{ $r.sampleStep | quote }}
        - name: RUNAI_PAGE_SIZE
          value: {{ int $r.pageSize | quote }}
        - name: RUNAI_REQUEST_TIMEOUT
          value: {{ $r.requestTimeout | quote }}
        {{- end }}
        {{- if $w.sql }}
        # SQL: the imports as JSON, each URL a file of the mounted Secret (url_file), never a
        # value here. Every `$` is doubled: the kubelet expands $(VAR) in env values and turns
        # $$ into $, so the daemon reads the queries' $1 and $2 (and any $) as written.
        - name: SQL_IMPORTS
          value: {{ include "edgemeter.sqlImports" $ | replace "$" "$$" | quote }}
        - name: SQL_MAPPER
          {{- if eq $s.mapper.type "configMap" }}
          value: {{ printf "%s/%s" $sqlMapperDir $s.mapper.configMap.key | quote }}
          {{- else if eq $s.mapper.type "image" }}
          value: {{ printf "%s/%s" $sqlMapperDir $s.mapper.image.path | quote }}
          {{- else }}
          value: {{ printf "builtin:%s" $s.mapper.builtin | quote }}
          {{- end }}
        - name: SQL_MAPPER_CONFIG
          value: {{ toJson $s.mapperConfig | replace "$" "$$" | quote }}
        - name: SQL_REQUEST_TIMEOUT
          value: {{ $s.requestTimeout | quote }}
        {{- end }}
        - name: EDGEMETER_MAPPER_MEMORY_MIB
          value: {{ $v.mapper.memoryMiB | quote }}
        - name: EDGEMETER_MAPPER_TIMEOUT
          value: {{ $v.mapper.timeout | quote }}
        {{- with $v.unit }}
        - name: EDGEMETER_UNIT
          value: {{ . | quote }}
        {{- end }}
        {{- with $v.clusterId }}
        - name: EDGEMETER_CLUSTER_ID
          value: {{ . | quote }}
        {{- end }}
        - name: EDGEMETER_HTTP_LISTEN
          value: "0.0.0.0:9464"
        - name: EDGEMETER_LOG
          value: {{ $v.log.level | quote }}
        - name: EDGEMETER_LOG_FORMAT
          value: {{ $v.log.format | quote }}
        # Stop (last window, lease release, delivery flush) 5 s before the kubelet's SIGKILL.
        - name: EDGEMETER_SHUTDOWN_TIMEOUT
          value: "{{ sub $v.terminationGracePeriodSeconds 5 }}s"
        - name: EDGEMETER_LEADER_ELECTION
          value: {{ $w.leaderElection | quote }}
        {{- if $w.leaderElection }}
        - name: EDGEMETER_LEASE_NAME
          value: {{ default $w.name $v.leaderElection.leaseName | quote }}
        - name: EDGEMETER_LEASE_NAMESPACE
          value: {{ $.Release.Namespace | quote }}
        - name: EDGEMETER_LEASE_IDENTITY
          value: $(POD_NAME)
        - name: EDGEMETER_LEASE_DURATION
          value: {{ $v.leaderElection.leaseDuration | quote }}
        - name: EDGEMETER_LEASE_RENEW_DEADLINE
          value: {{ $v.leaderElection.renewDeadline | quote }}
        - name: EDGEMETER_LEASE_RETRY_PERIOD
          value: {{ $v.leaderElection.retryPeriod | quote }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        # Generous: the HTTP server answers early, but a cold start on a large node may be
        # slow (mapper compilation, the first list of a large cluster).
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 60
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        # 503 while the queue does not answer or OpenMeter refuses the token/configuration.
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      resources:
        {{- toYaml (ternary $v.daemonset.resources $v.resources (eq $w.kind "DaemonSet")) | nindent 8 }}
      securityContext:
        {{- include "edgemeter.containerSecurityContext" $ | nindent 8 }}
      volumeMounts:
        - name: queue
          mountPath: /var/lib/edgemeter/queue
        - name: mapper-cache
          mountPath: /var/cache/edgemeter/mappers
        {{- if and $kube (ne $v.mapper.type "builtin") }}
        - name: mapper
          mountPath: {{ $mapperDir }}
          readOnly: true
        {{- end }}
        {{- if $w.runai }}
        - name: runai-credentials
          mountPath: {{ include "edgemeter.runaiCredentialsDir" $ }}
          readOnly: true
        {{- if ne $r.mapper.type "builtin" }}
        - name: runai-mapper
          mountPath: {{ $runaiMapperDir }}
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if $w.sql }}
        - name: sql-urls
          mountPath: {{ include "edgemeter.sqlUrlDir" $ }}
          readOnly: true
        {{- if or $s.caBundle.configMap $s.caBundle.secret }}
        - name: sql-ca
          mountPath: {{ include "edgemeter.sqlCaDir" $ }}
          readOnly: true
        {{- end }}
        {{- if ne $s.mapper.type "builtin" }}
        - name: sql-mapper
          mountPath: {{ $sqlMapperDir }}
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if or $v.caBundle.configMap $v.caBundle.secret }}
        - name: ca-bundle
          mountPath: /etc/edgemeter/ca
          readOnly: true
        {{- end }}
  volumes:
    {{- if eq $w.kind "DaemonSet" }}
    - name: queue
      hostPath:
        path: {{ default (printf "/var/lib/edgemeter/%s" $.Release.Name) $v.daemonset.hostPath.path }}
        type: DirectoryOrCreate
    {{- end }}
    - name: mapper-cache
      emptyDir: {}
    {{- if and $kube (eq $v.mapper.type "configMap") }}
    - name: mapper
      configMap:
        name: {{ $v.mapper.configMap.name }}
        items:
          - key: {{ $v.mapper.configMap.key }}
            path: {{ $v.mapper.configMap.key }}
    {{- else if and $kube (eq $v.mapper.type "image") }}
    - name: mapper
      image:
        reference: {{ $v.mapper.image.reference }}
        pullPolicy: {{ $v.mapper.image.pullPolicy }}
    {{- end }}
    {{- if $w.runai }}
    # The Run:ai credentials file alone, read-only: root-owned, readable by group 65532
    # (fsGroup) only.
    - name: runai-credentials
      secret:
        secretName: {{ $r.existingSecret }}
        defaultMode: 288  # 0440
        items:
          - key: {{ $r.key }}
            path: {{ $r.key }}
    {{- if eq $r.mapper.type "configMap" }}
    - name: runai-mapper
      configMap:
        name: {{ $r.mapper.configMap.name }}
        items:
          - key: {{ $r.mapper.configMap.key }}
            path: {{ $r.mapper.configMap.key }}
    {{- else if eq $r.mapper.type "image" }}
    - name: runai-mapper
      image:
        reference: {{ $r.mapper.image.reference }}
        pullPolicy: {{ $r.mapper.image.pullPolicy }}
    {{- end }}
    {{- end }}
    {{- if $w.sql }}
    # The database URLs alone, read-only: each import's key as a file named after the import
    # (the url_file of SQL_IMPORTS), root-owned, readable by group 65532 (fsGroup) only.
    - name: sql-urls
      projected:
        defaultMode: 288  # 0440
        sources:
          {{- range $secret := include "edgemeter.sqlSecrets" $ | fromYamlArray }}
          - secret:
              name: {{ $secret }}
              items:
                {{- range $i := $s.imports }}
                {{- if eq (default $s.existingSecret $i.existingSecret) $secret }}
                - key: {{ default $i.name $i.existingSecretKey }}
                  path: {{ $i.name }}
                {{- end }}
                {{- end }}
          {{- end }}
    {{- if $s.caBundle.configMap }}
    - name: sql-ca
      configMap:
        name: {{ $s.caBundle.configMap }}
        items:
          - key: {{ $s.caBundle.key }}
            path: {{ $s.caBundle.key }}
    {{- else if $s.caBundle.secret }}
    - name: sql-ca
      secret:
        secretName: {{ $s.caBundle.secret }}
        items:
          - key: {{ $s.caBundle.key }}
            path: {{ $s.caBundle.key }}
    {{- end }}
    {{- if eq $s.mapper.type "configMap" }}
    - name: sql-mapper
      configMap:
        name: {{ $s.mapper.configMap.name }}
        items:
          - key: {{ $s.mapper.configMap.key }}
            path: {{ $s.mapper.configMap.key }}
    {{- else if eq $s.mapper.type "image" }}
    - name: sql-mapper
      image:
        reference: {{ $s.mapper.image.reference }}
        pullPolicy: {{ $s.mapper.image.pullPolicy }}
    {{- end }}
    {{- end }}
    {{- if $v.caBundle.configMap }}
    - name: ca-bundle
      configMap:
        name: {{ $v.caBundle.configMap }}
        items:
          - key: {{ $v.caBundle.key }}
            path: {{ $v.caBundle.key }}
    {{- else if $v.caBundle.secret }}
    - name: ca-bundle
      secret:
        secretName: {{ $v.caBundle.secret }}
        items:
          - key: {{ $v.caBundle.key }}
            path: {{ $v.caBundle.key }}
    {{- end }}
{{- end }}
