#!/usr/bin/env bash
# Starts the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
# kwok's fake kubelets) on 127.0.0.1 with kwokctl's binary runtime. Idempotent: a healthy cluster is reused.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

APISERVER_PORT=${FTSO_APISERVER_PORT:-36443}
NODE_COUNT=${FTSO_NODE_COUNT:-3}
log="$FTSO_LOGS/cluster-up.log"
mkdir -p "$FTSO_LOGS"

fail() {
  echo "ftso cluster up: $1 (log: $log)" >&2
  exit 1
}

"$here/build.sh" >/dev/null || fail "the control-plane build failed, see $FTSO_LOGS/build.log"

kubectl() { "$FTSO_BIN/kubectl" --kubeconfig "$FTSO_KUBECONFIG" "$@"; }

cluster_healthy() {
  [[ -f "$FTSO_KUBECONFIG" ]] && kubectl get --raw /readyz >/dev/null 2>&1 &&
    [[ $(kubectl get nodes -l type=kwok --no-headers 2>/dev/null | grep -cw Ready) -ge "$NODE_COUNT" ]]
}

if cluster_healthy; then
  echo "local cluster '$FTSO_CLUSTER_NAME' already running; kubeconfig: $FTSO_KUBECONFIG"
  exit 0
fi

start=$(date +%s)
: >"$log"
# A cluster left half-alive (a reboot, a killed process) is cheaper to recreate than to repair.
"$FTSO_BIN/kwokctl" delete cluster --name "$FTSO_CLUSTER_NAME" >>"$log" 2>&1 || true

if (exec 3<>"/dev/tcp/127.0.0.1/$APISERVER_PORT") 2>/dev/null; then
  fail "port $APISERVER_PORT on 127.0.0.1 is in use; free it or set FTSO_APISERVER_PORT"
fi

kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" 2>>"$log" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -d "$kwok_dir/kustomize/stage" ]] || fail "kwok $KWOK_VERSION sources not found in the Go module cache"
stages="$kwok_dir/kustomize/stage"

config="$FTSO_CACHE/kwokctl.yaml"
{
  cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeApiserverPort: $APISERVER_PORT
  kubeAuthorization: true
  kubeAdmission: true
  kubeVersion: $K8S_VERSION
  nodeLeaseDurationSeconds: 40
  # A real kubelet renews its 40 s lease every 10 s; kwokctl stretches heartbeats 5x unless told not to.
  heartbeatFactor: 1
  disableQPSLimits: true
  etcdBinary: $FTSO_BIN/etcd
  kubeApiserverBinary: $FTSO_BIN/kube-apiserver
  kubeControllerManagerBinary: $FTSO_BIN/kube-controller-manager
  kubeSchedulerBinary: $FTSO_BIN/kube-scheduler
  kubectlBinary: $FTSO_BIN/kubectl
  kwokControllerBinary: $FTSO_BIN/kwok
componentsPatches:
# Room for thousands of Services (the scale benchmark makes three per resource); the default is a /24.
- name: kube-apiserver
  extraArgs:
  - key: service-cluster-ip-range
    value: 10.96.0.0/16
# Kubernetes' own defaults for noticing a lost node (kwokctl stretches them for its slow heartbeats), so the
# baselines our failover is compared against are the real ones.
- name: kube-controller-manager
  extraArgs:
  - key: node-monitor-grace-period
    value: 50s
    override: true
  - key: node-monitor-period
    value: 5s
    override: true
EOF
  # kwok's own default stages (nodes and pods become Ready, Jobs complete, deletions finish) plus the
  # chaos stages that tests trigger with a label: a pod's container failing, a node going NotReady.
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
    pod/chaos/pod-container-running-failed.yaml node/chaos/node-not-ready.yaml; do
    echo "---"
    cat "$stages/$f"
  done
} >"$config"

"$FTSO_BIN/kwokctl" create cluster --name "$FTSO_CLUSTER_NAME" -c "$config" \
  --kubeconfig "$FTSO_KUBECONFIG" --wait 3m >>"$log" 2>&1 ||
  fail "kwokctl could not start the control plane"

zones=(zone-a zone-b zone-c)
for ((i = 0; i < NODE_COUNT; i++)); do
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: ${zones[$((i % 3))]}
    topology.kubernetes.io/region: local
spec:
  # kwok hands out pod IPs from the node's range; distinct ranges keep every pod IP unique.
  podCIDR: 10.$((100 + i)).0.0/16
  podCIDRs: [10.$((100 + i)).0.0/16]
status:
  allocatable: {cpu: "1000", memory: 4Ti, pods: "20000"}
  capacity: {cpu: "1000", memory: 4Ti, pods: "20000"}
---
EOF
done | kubectl apply -f - >>"$log" 2>&1 || fail "could not create the kwok nodes"

kubectl wait --for=condition=Ready nodes -l type=kwok --timeout=120s >>"$log" 2>&1 ||
  fail "the kwok nodes did not become Ready"
# The default ServiceAccount is made by the controller manager; e2e namespaces need it at once.
for _ in $(seq 60); do
  kubectl get serviceaccount default -n default >/dev/null 2>&1 && break
  sleep 1
done

echo "local cluster '$FTSO_CLUSTER_NAME' up in $(($(date +%s) - start)) s; kubeconfig: $FTSO_KUBECONFIG"
