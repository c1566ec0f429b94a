{{- define "ftso.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ftso.labels" -}}
app.kubernetes.io/name: ftso
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ftso.selectorLabels" -}}
app.kubernetes.io/name: ftso
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ftso.serviceAccountName" -}}
{{- default (include "ftso.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* What the operator does to the objects of the namespaces it serves: no wildcards, no Secrets. */}}
{{- define "ftso.namespacedRules" -}}
- apiGroups: ["ftso.dev"]
  resources: ["faulttolerantservices"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ftso.dev"]
  resources: ["faulttolerantservices/status"]
  verbs: ["get", "patch", "update"]
# Owned objects point at their resource with blockOwnerDeletion, which clusters that enforce
# OwnerReferencesPermissionEnforcement (OpenShift) allow only to who may update its finalizers.
- apiGroups: ["ftso.dev"]
  resources: ["faulttolerantservices/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
# delete: the pods' own Services (traffic.policy Weighted) go with the pods scale-down removes.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["endpoints"]
  verbs: ["delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# spec.traffic: the route on the user's Gateway, and the implementation's load-balancer object. Read by
# name, not watched: their CRDs may come after the operator.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways"]
  verbs: ["get"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["gateway.envoyproxy.io"]
  resources: ["backendtrafficpolicies"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["networking.istio.io"]
  resources: ["destinationrules"]
  verbs: ["get", "create", "patch", "delete"]
# health.metrics: the pods' measured CPU and memory.
- apiGroups: ["metrics.k8s.io"]
  resources: ["pods"]
  verbs: ["get", "list"]
{{- end -}}

{{/* Failover reads node health and node heartbeats, wherever the pods run. */}}
{{- define "ftso.nodeRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{- define "ftso.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch"]
{{- end -}}
