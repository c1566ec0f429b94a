#!/usr/bin/env bash
# Starts the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok's fake
# kubelets and metrics-server) on 127.0.0.1 with kwokctl's binary runtime. Idempotent: a healthy cluster is reused.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

APISERVER_PORT=${FTSO_APISERVER_PORT:-36443}
NODE_COUNT=${FTSO_NODE_COUNT:-3}
# Another cluster (FTSO_CLUSTER_NAME) gets its own log and config, so two can start side by side.
suffix=${FTSO_CLUSTER_NAME#ftso}
suffix=${suffix:+-$FTSO_CLUSTER_NAME}
log="$FTSO_LOGS/cluster-up$suffix.log"
mkdir -p "$FTSO_LOGS"

fail() {
  echo "ftso cluster up: $1 (log: $log)" >&2
  exit 1
}

"$here/build.sh" >/dev/null || fail "the control-plane build failed, see $FTSO_LOGS/build.log"

kubectl() { "$FTSO_BIN/kubectl" --kubeconfig "$FTSO_KUBECONFIG" "$@"; }
dir=$KWOK_WORKDIR/clusters/$FTSO_CLUSTER_NAME

arg() { # pid flag: the flag's value in the process's command line
  tr '\0' '\n' <"/proc/$1/cmdline" | sed -n "s/^--$2=//p" | head -n 1
}

get_raw() { # server path: an anonymous GET with the kubectl we built (no curl needed); the dummy basic
  # credentials, which no component checks, keep kubectl from prompting for some.
  "$FTSO_BIN/kubectl" --kubeconfig /dev/null --server "$1" --insecure-skip-tls-verify \
    --username probe --password probe --request-timeout 3s get --raw "$2" 2>/dev/null </dev/null
}

leads() { # server name: the component holds its leader lease, so it does its work
  local metrics
  metrics=$(get_raw "$1" /metrics | tr -d '\0') || return 1
  grep -qx "leader_election_master_status{name=\"$2\"} 1" <<<"$metrics"
}

component_healthy() { # name: its process runs (not paused, not a zombie) and its health check passes
  local pid state server health
  pid=$(cat "$dir/pids/$1.pid" 2>/dev/null) || return 1
  state=$(sed -n 's/.*) \([A-Za-z]\).*/\1/p' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state =~ ^[RSD]$ ]] || return 1
  case $1 in
    etcd)
      health=$(get_raw "$(arg "$pid" listen-client-urls | cut -d, -f1)" /health) || return 1
      [[ $health == *'"health":"true"'* ]]
      ;;
    kube-apiserver) kubectl --request-timeout 5s get --raw /readyz >/dev/null 2>&1 ;;
    kube-controller-manager | kube-scheduler)
      server="https://127.0.0.1:$(arg "$pid" secure-port)"
      get_raw "$server" /healthz >/dev/null && leads "$server" "$1"
      ;;
    kwok-controller) get_raw "http://$(arg "$pid" server-address)" /healthz >/dev/null ;;
    metrics-server)
      # /livez fails when its scrapes stall; through the aggregator, metrics.k8s.io must answer too.
      get_raw "https://$(arg "$pid" bind-address):$(arg "$pid" secure-port)" /livez >/dev/null &&
        kubectl --request-timeout 5s get --raw /apis/metrics.k8s.io/v1beta1/nodes >/dev/null 2>&1
      ;;
    *)
      # A component this script does not know has no health check: say so, rather than pass it unchecked.
      echo "ftso cluster up: no health check for component '$1' (see component_healthy)" >&2
      return 1
      ;;
  esac
}

config_current() { # the cluster was made by this version of the script (kwok manages only its own nodes,
  # metrics-server runs)
  grep -q -- '--manage-all-nodes=false' "$dir/kwok.yaml" 2>/dev/null &&
    grep -q "^  binary: .*/bin/metrics-server$" "$dir/kwok.yaml"
}

cluster_healthy() { # every component, and the kwok nodes Ready
  [[ -f "$FTSO_KUBECONFIG" && -f "$dir/kwok.yaml" ]] || return 1
  local name
  for name in $(sed -n 's#^  binary: .*/##p' "$dir/kwok.yaml"); do
    component_healthy "$name" || return 1
  done
  [[ $(kubectl --request-timeout 5s get nodes -l type=kwok --no-headers 2>/dev/null | grep -cw Ready) -ge "$NODE_COUNT" ]]
}

real_node() { # the real node next to kwok's: its failure leaves the fake nodes usable, and says why
  local code=0 why=$FTSO_CACHE/real-node-$FTSO_CLUSTER_NAME.unavailable
  "$here/node.sh" up || code=$?
  ((code == 0)) && return 0
  # node.sh explains itself (exit 3); anything else is recorded here, for the tests that need the node.
  [[ -f $why ]] || echo "e2e/cluster/node.sh up failed (exit $code), see $FTSO_LOGS/real-node-$FTSO_CLUSTER_NAME.log" >"$why"
  echo "ftso cluster up: the fake nodes are up, the real node is not: $(cat "$why")" >&2
}

gateway_api() { # the CRDs spec.traffic writes; applied on every start, so a reused cluster has them too
  "$here/gateway-api.sh" >>"$log" 2>&1 || fail "could not install the Gateway API CRDs"
}

if [[ -f "$dir/kwok.yaml" ]] && ! config_current; then
  echo "local cluster '$FTSO_CLUSTER_NAME' was made by an older up.sh; recreating it"
  "$here/node.sh" down >/dev/null 2>&1 || true
elif cluster_healthy; then
  "$here/supervise.sh" start || fail "the supervisor did not start"
  gateway_api
  echo "local cluster '$FTSO_CLUSTER_NAME' already running; kubeconfig: $FTSO_KUBECONFIG"
  real_node
  exit 0
fi

start=$(date +%s)
: >"$log"
if [[ -f "$FTSO_KUBECONFIG" && -f "$dir/kwok.yaml" ]] && config_current; then
  # A dead component (or one a test paused for a moment) is repaired by the supervisor, as on a node;
  # recreating would pull the cluster from under whoever else uses it.
  "$here/supervise.sh" start >>"$log" 2>&1 || true
  for _ in $(seq 60); do
    if cluster_healthy; then
      gateway_api
      echo "local cluster '$FTSO_CLUSTER_NAME' repaired in $(($(date +%s) - start)) s; kubeconfig: $FTSO_KUBECONFIG"
      real_node
      exit 0
    fi
    sleep 1
  done
  echo "not repaired in 60 s; recreating" >>"$log"
fi
# A cluster beyond repair (a reboot, lost files) is recreated.
"$here/supervise.sh" stop >>"$log" 2>&1 || true
"$here/node.sh" down >>"$log" 2>&1 || true
"$FTSO_BIN/kwokctl" delete cluster --name "$FTSO_CLUSTER_NAME" >>"$log" 2>&1 || true

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$APISERVER_PORT") 2>/dev/null; }
# An API server just stopped (the cluster recreated above) may hold the port for a few seconds.
for _ in $(seq 20); do port_in_use || break; sleep 0.5; done
if port_in_use; then
  fail "port $APISERVER_PORT on 127.0.0.1 is in use; free it or set FTSO_APISERVER_PORT"
fi

kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" 2>>"$log" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -d "$kwok_dir/kustomize/stage" ]] || fail "kwok $KWOK_VERSION sources not found in the Go module cache"
stages="$kwok_dir/kustomize/stage"
# kwokctl caches what it built from a manifest directory under the directory's path, and would reuse it
# after an edit: drop it. (Its cache dir is $KWOK_WORKDIR/cache; the key is the path's SHA-256.)
metrics_manifests="$here/metrics-server"
rm -f "$KWOK_WORKDIR/cache/manifest/$(printf %s "$metrics_manifests" | sha256sum | cut -d' ' -f1).yaml"

config="$FTSO_CACHE/kwokctl$suffix.yaml"
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
  # metrics.k8s.io (PodMetrics) from kwok's simulated usage: kwokctl then also loads kwok's default
  # metrics-resource Metric (the kubelet's /metrics/resource, per node) and the usage-from-annotation
  # ClusterResourceUsage (a pod's kwok.x-k8s.io/usage-cpu and kwok.x-k8s.io/usage-memory annotations).
  enableMetricsServer: true
  metricsServerBinary: $FTSO_BIN/metrics-server
  metricsServerManifests: [$metrics_manifests]
componentsPatches:
# Room for thousands of Services (the scale benchmark makes three per resource); the default is a /24.
- name: kube-apiserver
  extraArgs:
  - key: service-cluster-ip-range
    value: 10.96.0.0/16
  # The real node's kubelet (node.sh): reached at its address, with the admin certificate it trusts.
  - key: kubelet-preferred-address-types
    value: InternalIP,Hostname
  - key: kubelet-client-certificate
    value: $dir/pki/admin.crt
  - key: kubelet-client-key
    value: $dir/pki/admin.key
# kwok manages only its own nodes (annotated kwok.x-k8s.io/node: fake), never the real node (node.sh).
- name: kwok-controller
  extraArgs:
  - key: manage-all-nodes
    value: "false"
    override: true
  - key: manage-nodes-with-annotation-selector
    value: kwok.x-k8s.io/node=fake
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
# The shortest scrape interval metrics-server allows (kwokctl sets 15s), so a usage change shows within
# about 10 s; it must exceed the scrape timeout by 10 %, hence 5 s for that (10 s by default).
- name: metrics-server
  extraArgs:
  - key: metric-resolution
    value: 10s
    override: true
  - key: kubelet-request-timeout
    value: 5s
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
    # Where metrics-server scrapes the node's resource metrics: kwok's metrics-resource serves them there.
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/kwok-node-$i/metrics/resource
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: ${zones[$((i % 3))]}
    topology.kubernetes.io/region: local
spec:
  # Only workloads that tolerate this land on a fake node (the e2e tests' fake workloads do, see e2e/fts.py);
  # the rest, such as examples/counter, runs for real on the real node (node.sh).
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
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
# The aggregator serves metrics.k8s.io once it reaches metrics-server.
kubectl wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=60s >>"$log" 2>&1 ||
  fail "metrics.k8s.io did not become available"
# The default ServiceAccount is made by the controller manager; e2e namespaces need it at once.
for _ in $(seq 60); do
  kubectl get serviceaccount default -n default >/dev/null 2>&1 && break
  sleep 1
done

"$here/supervise.sh" start >>"$log" 2>&1 || fail "the supervisor did not start"
gateway_api

echo "local cluster '$FTSO_CLUSTER_NAME' up in $(($(date +%s) - start)) s; kubeconfig: $FTSO_KUBECONFIG"
real_node
