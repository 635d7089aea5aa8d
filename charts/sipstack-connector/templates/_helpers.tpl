{{/* Chart name. */}}
{{- define "sipstack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name when it mentions sipstack (or the chart name), else <release>-<chart>. */}}
{{- define "sipstack.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if or (contains $name .Release.Name) (contains "sipstack" .Release.Name) -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sipstack.operatorName" -}}
{{- printf "%s-operator" (include "sipstack.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sipstack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "sipstack.labels" -}}
helm.sh/chart: {{ include "sipstack.chart" . }}
app.kubernetes.io/part-of: sipstack-connector-asterisk
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the operator's pods. */}}
{{- define "sipstack.operatorSelectorLabels" -}}
app.kubernetes.io/name: sipstack-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sipstack.operatorLabels" -}}
{{ include "sipstack.labels" . }}
{{ include "sipstack.operatorSelectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "sipstack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sipstack.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sipstack.operatorImage" -}}
{{- $img := .Values.operator.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the Prometheus Operator's API is served by the cluster. */}}
{{- define "sipstack.hasMonitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{/*
The connectors of the fleet after merging connectorDefaults, as a YAML list of
{name, namespace, labels, annotations, secretName, createSecret, spec}.
Every template that needs the fleet reads this one definition.
*/}}
{{- define "sipstack.connectors" -}}
{{- $root := . -}}
{{- $out := list -}}
{{- $seen := dict -}}
{{- range $i, $c := .Values.connectors -}}
{{- $item := mergeOverwrite (deepCopy $root.Values.connectorDefaults) (deepCopy $c) -}}
{{- $name := required (printf "connectors[%d].name is required" $i) $item.name -}}
{{- $ns := default $root.Release.Namespace $item.namespace -}}
{{- $key := printf "%s/%s" $ns $name -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "connectors[%d]: %s appears twice in connectors" $i $key) -}}
{{- end -}}
{{- $_ := set $seen $key true -}}
{{- $watched := include "sipstack.watchedNamespaces" $root | fromJsonArray -}}
{{- if and (not $root.Values.operator.clusterWide) (not (has $ns $watched)) -}}
{{- fail (printf "connectors[%d] (%s): namespace %s is not in operator.watchNamespaces %v (nor the release's namespace): the operator would never see it" $i $name $ns $root.Values.operator.watchNamespaces) -}}
{{- end -}}
{{- if not (or $item.region $item.apiUrl) -}}
{{- fail (printf "connectors[%d] (%s): set region (ca1, us1, us2, dev) or apiUrl, here or in connectorDefaults" $i $name) -}}
{{- end -}}
{{- if not $item.customerId -}}
{{- fail (printf "connectors[%d] (%s): customerId is required, here or in connectorDefaults" $i $name) -}}
{{- end -}}
{{- $db := default (dict) $item.database -}}
{{- range $field := list "host" "type" "name" "user" -}}
{{- if not (index $db $field) -}}
{{- fail (printf "connectors[%d] (%s): database.%s is required, here or in connectorDefaults" $i $name $field) -}}
{{- end -}}
{{- end -}}
{{- if and $item.existingSecret $item.createSecret -}}
{{- fail (printf "connectors[%d] (%s): use existingSecret or createSecret, not both" $i $name) -}}
{{- end -}}
{{- $secretName := "" -}}
{{- if $item.existingSecret -}}
{{- $secretName = $item.existingSecret -}}
{{- else if $item.createSecret -}}
{{- $secretName = printf "%s-credentials" $name -}}
{{- end -}}
{{- $spec := omit $item "name" "namespace" "labels" "annotations" "existingSecret" "createSecret" -}}
{{- if $secretName -}}
{{- if not $spec.apiKeySecretRef -}}
{{- $_ := set $spec "apiKeySecretRef" (dict "name" $secretName "key" "api-key") -}}
{{- end -}}
{{- if not $db.passwordSecretRef -}}
{{- $_ := set $db "passwordSecretRef" (dict "name" $secretName "key" "db-password") -}}
{{- end -}}
{{- $cel := default (dict) $spec.cel -}}
{{- if and (eq (toString $cel.mode) "ami") $cel.ami -}}
{{- if not $cel.ami.passwordSecretRef -}}
{{- $_ := set $cel.ami "passwordSecretRef" (dict "name" $secretName "key" "ami-password") -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $spec "database" $db -}}
{{- if not $spec.apiKeySecretRef -}}
{{- fail (printf "connectors[%d] (%s): set existingSecret, createSecret or apiKeySecretRef (the API key is only read from a Secret)" $i $name) -}}
{{- end -}}
{{- if and $spec.apiAllowInsecureHttp $root.Values.operator.enabled (not $root.Values.operator.allow.insecureHttp) -}}
{{- fail (printf "connectors[%d] (%s): apiAllowInsecureHttp is true while operator.allow.insecureHttp is false: the operator would refuse it (NotAllowed); use https:// or allow it for this install" $i $name) -}}
{{- end -}}
{{- $mode := $root.Values.serviceMonitor.agents.mode -}}
{{- $mon := default (dict) $spec.monitoring -}}
{{- $sm := default (dict) $mon.serviceMonitor -}}
{{- if and (eq $mode "fleet") $sm.enabled $root.Values.serviceMonitor.enabled -}}
{{- fail (printf "connectors[%d] (%s): monitoring.serviceMonitor.enabled is true while serviceMonitor.agents.mode is fleet: the agent would be scraped twice; use mode perConnector instead" $i $name) -}}
{{- end -}}
{{- if and (eq $mode "perConnector") $root.Values.serviceMonitor.enabled (include "sipstack.hasMonitoringApi" $root) -}}
{{- $labels := merge (default (dict) $sm.labels) (deepCopy $root.Values.serviceMonitor.additionalLabels) -}}
{{- $smOut := dict "enabled" true "interval" (default $root.Values.serviceMonitor.interval $sm.interval) -}}
{{- if $labels -}}
{{- $_ := set $smOut "labels" $labels -}}
{{- end -}}
{{- $_ := set $mon "serviceMonitor" $smOut -}}
{{- $_ := set $spec "monitoring" $mon -}}
{{- end -}}
{{- $out = append $out (dict "name" $name "namespace" $ns "labels" (default (dict) $item.labels) "annotations" (default (dict) $item.annotations) "secretName" $secretName "createSecret" $item.createSecret "spec" $spec) -}}
{{- end -}}
{{- toYaml (dict "items" $out) -}}
{{- end -}}

{{/* The kubectl image of the hook Jobs. */}}
{{- define "sipstack.hookImage" -}}
{{- $img := .Values.hooks.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- end -}}
{{- end -}}

{{/*
The pod spec of a hook Job (kubectl only, restricted security context).
Call with (dict "root" $ "name" <hook name> "containers" <list of {name, args}>).
*/}}
{{- define "sipstack.hookPodSpec" -}}
{{- $root := .root -}}
serviceAccountName: {{ .name }}
restartPolicy: Never
{{- with $root.Values.hooks.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
containers:
  {{- range .containers }}
  - name: {{ .name }}
    image: {{ include "sipstack.hookImage" $root | quote }}
    imagePullPolicy: {{ $root.Values.hooks.image.pullPolicy }}
    command:
      - kubectl
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      - name: HOME
        value: /tmp
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop:
          - ALL
    {{- with $root.Values.hooks.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      {{- range .mounts }}
      - {{ toYaml . | nindent 8 | trim }}
      {{- end }}
  {{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- range .volumes }}
  - {{ toYaml . | nindent 4 | trim }}
  {{- end }}
{{- end -}}

{{/*
The namespaces a namespaced operator (not operator.clusterWide) serves: the
release's namespace plus operator.watchNamespaces, as a JSON list.
*/}}
{{- define "sipstack.watchedNamespaces" -}}
{{- toJson (uniq (prepend .Values.operator.watchNamespaces .Release.Namespace)) -}}
{{- end -}}

{{/*
The opt-in label the operator asks of every referenced Secret
(operator.allow.secretLabel, key=value) as one YAML map line; empty for "*".
*/}}
{{- define "sipstack.secretLabel" -}}
{{- $label := .Values.operator.allow.secretLabel -}}
{{- if ne $label "*" -}}
{{- $kv := splitList "=" $label -}}
{{ index $kv 0 }}: {{ index $kv 1 | quote }}
{{- end -}}
{{- end -}}
