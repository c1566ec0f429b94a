#!/usr/bin/env bash
# The local cluster's one real node, next to kwok's fake ones: containerd and runc from Debian's packages,
# kubelet and kube-proxy built from the control plane's pinned Kubernetes source, a bridge CNI network
# with a private pod range that exists only on this machine.
#   node.sh up       start it (idempotent; a healthy node is reused) and import the images
#   node.sh down     stop every process, container, mount, rule and file it made
#   node.sh status   exit 0 when the node is Ready
# When a piece cannot work here, `up` writes why to $FTSO_CACHE/real-node-<cluster>.unavailable and exits 3:
# the cluster is still usable for the fake nodes, and the tests that need the real node fail with that text.
#
# Machine-wide pieces exist once (one real node per machine, owned by one cluster at a time): the bridge
# `ftso0` (10.244.0.1/24, the node's address), the iptables rules tagged "ftso-real-node", ip_forward
# (restored at `down`). The node's files live under $FTSO_CACHE/node/<cluster>.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

NODE_NAME=real-0
BRIDGE=ftso0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SANDBOX_IMAGE=pause:3.10
node_dir=$FTSO_CACHE/node/$FTSO_CLUSTER_NAME
owner_file=/run/ftso-real-node.owner # which cluster owns the machine-wide pieces
unavailable=$FTSO_CACHE/real-node-$FTSO_CLUSTER_NAME.unavailable
log=$FTSO_LOGS/real-node-$FTSO_CLUSTER_NAME.log
sock=$node_dir/containerd.sock
mkdir -p "$FTSO_LOGS"

kubectl() { "$FTSO_BIN/kubectl" --kubeconfig "$FTSO_KUBECONFIG" "$@"; }
ctr() { command ctr --address "$sock" --namespace k8s.io "$@"; }
note() { echo "$(date -u +%FT%TZ) $*" >>"$log"; }

unavailable() { # why: the node cannot work here; say so where the tests will find it
  echo "$1" >"$unavailable"
  echo "ftso real node: unavailable: $1 (log: $log)" >&2
  exit 3
}

live_pid() { # name: the pid in the node's pid file, if that process still runs
  local pid
  pid=$(cat "$node_dir/$1.pid" 2>/dev/null) || return 1
  [[ -n $pid && -d /proc/$pid ]] && grep -q "$1" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

node_ready() {
  [[ $(kubectl --request-timeout 5s get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

healthy() {
  live_pid containerd >/dev/null && live_pid kubelet >/dev/null && live_pid kube-proxy >/dev/null && node_ready
}

prerequisites() {
  [[ $(id -u) == 0 ]] || unavailable "the real node needs root (containerd, runc, network namespaces, iptables)"
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
    missing+=(containernetworking-plugins)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v iptables >/dev/null || missing+=(iptables)
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null || unavailable "missing ${missing[*]} and no apt-get to install them"
    note "installing ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; } >>"$log" 2>&1 || unavailable "apt-get could not install ${missing[*]}"
  fi
  [[ -d /sys/fs/cgroup/cpu || -f /sys/fs/cgroup/cgroup.controllers ]] || unavailable "no cgroup filesystem at /sys/fs/cgroup"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems || unavailable "the kernel has no overlay filesystem (containerd's snapshotter)"
  local other
  other=$(cat "$owner_file" 2>/dev/null || true)
  if [[ -n $other && $other != "$FTSO_CLUSTER_NAME" && -d $FTSO_CACHE/node/$other ]]; then
    unavailable "the machine's one real node belongs to cluster '$other'; run FTSO_CLUSTER_NAME=$other make cluster-down first"
  fi
}

network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || unavailable "cannot create the bridge $BRIDGE"
  fi
  [[ $(ip -4 addr show dev "$BRIDGE") == *"inet $NODE_IP/"* ]] || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  [[ -f $node_dir/ip_forward.saved ]] || cat /proc/sys/net/ipv4/ip_forward >"$node_dir/ip_forward.saved"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  # Pod traffic stays on this machine: nothing from the pod range is forwarded out of the bridge.
  iptables -C FORWARD -s "$POD_CIDR" ! -o "$BRIDGE" -m comment --comment ftso-real-node -j DROP 2>/dev/null ||
    iptables -I FORWARD 1 -s "$POD_CIDR" ! -o "$BRIDGE" -m comment --comment ftso-real-node -j DROP ||
    unavailable "iptables cannot add rules (kube-proxy needs them too)"
  mkdir -p "$node_dir/cni/net.d" "$node_dir/cni/ipam"
  cat >"$node_dir/cni/net.d/10-ftso.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "ftso-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node_dir/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.244.0.10", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_daemon() { # name command...: in the background, with a pid file and a log
  local name=$1
  shift
  setsid "$@" </dev/null >>"$FTSO_LOGS/$name-$FTSO_CLUSTER_NAME.log" 2>&1 &
  echo $! >"$node_dir/$name.pid"
}

containerd_up() {
  live_pid containerd >/dev/null && return 0
  mkdir -p "$node_dir/containerd"
  cat >"$node_dir/containerd/config.toml" <<EOF
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node_dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: without this, runc fails writing /proc/self/oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
  start_daemon containerd containerd --config "$node_dir/containerd/config.toml"
  for _ in $(seq 50); do
    ctr version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  unavailable "containerd did not start (log: $FTSO_LOGS/containerd-$FTSO_CLUSTER_NAME.log)"
}

images_up() { # build (cached) and import what changed since the last import
  "$here/images.sh" build >>"$log" 2>&1 || unavailable "the images did not build (log: $FTSO_LOGS/images.log)"
  local archive stamp
  for archive in "$FTSO_CACHE"/images/*.oci.tar; do
    stamp=$node_dir/imported-$(basename "$archive").stamp
    [[ $(cat "$stamp" 2>/dev/null) == "$(cat "$archive.stamp")" ]] && continue
    ctr images import "$archive" >>"$log" 2>&1 || unavailable "containerd could not import $archive"
    cp "$archive.stamp" "$stamp"
  done
}

kubelet_up() {
  live_pid kubelet >/dev/null && return 0
  mkdir -p "$node_dir/kubelet" "$node_dir/kubelet-plugins" "$node_dir/pki"
  cat >"$node_dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1, which kubelet 1.36 refuses unless told otherwise; no systemd: cgroupfs.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podCIDR: $POD_CIDR
maxPods: 60
failSwapOn: false
serializeImagePulls: false
registerNode: true
# The node's images are imported, never pulled: keep them whatever the disk usage.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
volumePluginDir: $node_dir/kubelet-plugins
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $KWOK_WORKDIR/clusters/$FTSO_CLUSTER_NAME/pki/ca.crt}
authorization:
  mode: Webhook
nodeStatusUpdateFrequency: 10s
shutdownGracePeriod: 0s
EOF
  start_daemon kubelet "$FTSO_BIN/kubelet" --config "$node_dir/kubelet.yaml" --kubeconfig "$FTSO_KUBECONFIG" \
    --root-dir "$node_dir/kubelet" --cert-dir "$node_dir/pki" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" --node-labels "type=real,topology.kubernetes.io/zone=zone-real" --v 1
}

kube_proxy_up() {
  live_pid kube-proxy >/dev/null && return 0
  cat >"$node_dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $FTSO_KUBECONFIG
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables:
  localhostNodePorts: false
# Leave the machine's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  start_daemon kube-proxy "$FTSO_BIN/kube-proxy" --config "$node_dir/kube-proxy.yaml" --v 1
}

up() {
  rm -f "$unavailable"
  : >>"$log"
  if healthy; then
    images_up
    echo "real node $NODE_NAME already running"
    return 0
  fi
  start=$(date +%s)
  prerequisites
  mkdir -p "$node_dir"
  echo "$FTSO_CLUSTER_NAME" >"$owner_file"
  [[ -x $FTSO_BIN/kubelet && -x $FTSO_BIN/kube-proxy ]] || unavailable "kubelet or kube-proxy was not built"
  network_up
  containerd_up
  images_up
  kubelet_up
  kube_proxy_up
  for _ in $(seq 120); do
    if node_ready; then
      # kwok's nodes are tainted (see up.sh), this one is not: pods that tolerate nothing land here.
      echo "real node $NODE_NAME Ready in $(($(date +%s) - start)) s"
      return 0
    fi
    live_pid kubelet >/dev/null || unavailable "kubelet exited: $(tail -n 3 "$FTSO_LOGS/kubelet-$FTSO_CLUSTER_NAME.log" | tr '\n' ' ')"
    sleep 1
  done
  unavailable "node $NODE_NAME did not become Ready in 120 s: $(tail -n 3 "$FTSO_LOGS/kubelet-$FTSO_CLUSTER_NAME.log" | tr '\n' ' ')"
}

stop_pid() { # name
  local pid
  pid=$(live_pid "$1") || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    [[ -d /proc/$pid ]] || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

down() {
  [[ -d $node_dir ]] || {
    rm -f "$unavailable"
    return 0
  }
  stop_pid kubelet
  stop_pid kube-proxy
  # Every container of this node: their shims carry the node's containerd socket on their command line.
  local proc args
  for proc in /proc/[0-9]*; do
    { args=$(tr '\0' ' ' <"$proc/cmdline"); } 2>/dev/null || continue
    [[ $args == *containerd-shim*"$sock"* ]] && kill -9 "${proc#/proc/}" 2>/dev/null || true
  done
  sleep 0.5
  stop_pid containerd
  # Mounts under the node's directory (container root filesystems, volumes), deepest first.
  awk -v d="$node_dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done
  # Network namespaces containerd made for this node's pods.
  for ns in /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    umount "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
  kube-proxy-cleanup
  while iptables -D FORWARD -s "$POD_CIDR" ! -o "$BRIDGE" -m comment --comment ftso-real-node -j DROP 2>/dev/null; do :; done
  ip link del "$BRIDGE" 2>/dev/null || true
  [[ ! -f $node_dir/ip_forward.saved ]] || cat "$node_dir/ip_forward.saved" >/proc/sys/net/ipv4/ip_forward
  kubectl --request-timeout 5s delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  rm -rf "${node_dir:?}" "$unavailable"
  [[ $(cat "$owner_file" 2>/dev/null) != "$FTSO_CLUSTER_NAME" ]] || rm -f "$owner_file"
  echo "real node $NODE_NAME is down"
}

kube-proxy-cleanup() {
  # kube-proxy's and kubelet's chains (KUBE-*); only this node's kube-proxy and kubelet make them.
  [[ -x $FTSO_BIN/kube-proxy ]] && "$FTSO_BIN/kube-proxy" --cleanup >>"$log" 2>&1 || true
  local table rule chain
  for table in filter nat mangle; do
    (iptables -t "$table" -S 2>/dev/null || true) | awk '/^-A [A-Z]+ .*-j KUBE-/' | while read -r rule; do
      eval "iptables -t $table -D ${rule#-A }" 2>/dev/null || true
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

main() {
  case ${1:-} in
    up) up ;;
    down) down ;;
    status) healthy ;;
    *)
      echo "usage: $0 up|down|status" >&2
      return 2
      ;;
  esac
}

main "$@"
