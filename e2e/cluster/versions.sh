# Pinned versions and cache locations of the local control plane; sourced by the cluster scripts.
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.19.5
# Serves metrics.k8s.io (PodMetrics) from kwok's simulated usage; kwokctl runs it as a component.
METRICS_SERVER_VERSION=v0.8.0

FTSO_CACHE=${FTSO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ftso}
FTSO_BIN=$FTSO_CACHE/bin
FTSO_LOGS=$FTSO_CACHE/logs
FTSO_CLUSTER_NAME=${FTSO_CLUSTER_NAME:-ftso}
# kwokctl keeps its clusters under this workdir; the kubeconfig path is stable across runs.
KWOK_WORKDIR=$FTSO_CACHE/kwok
# A second cluster (another FTSO_CLUSTER_NAME) gets its own kubeconfig, so two can run side by side.
if [[ $FTSO_CLUSTER_NAME == ftso ]]; then FTSO_KUBECONFIG=$FTSO_CACHE/kubeconfig; else FTSO_KUBECONFIG=$FTSO_CACHE/kubeconfig-$FTSO_CLUSTER_NAME; fi
export KWOK_WORKDIR
# Gateway API's standard-channel CRDs (HTTPRoute, Gateway, ...), from the module's config/crd/standard.
GATEWAY_API_VERSION=v1.6.3
ISTIO_API_VERSION=v1.32.0  # e2e only: the DestinationRule CRD for spec.traffic provider Istio
