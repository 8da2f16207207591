{{/* Labels on every object. */}}
{{- define "netbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/name: netbridge
app.kubernetes.io/part-of: netbridge
{{- end }}

{{/* Selector labels of a component: the same as the kustomize install, so a
     move between the two never hits an immutable selector. */}}
{{- define "netbridge.selector" -}}
app.kubernetes.io/name: netbridge
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- define "netbridge.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf "v%s" .Chart.AppVersion) }}
{{- end }}

{{/* Container securityContext shared by every container: nothing
     privileged, no escalation, read-only root, capabilities dropped. */}}
{{- define "netbridge.containerSecurity" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- with . }}
  add: {{ toJson . }}
{{- end }}
{{- end }}
