#!/usr/bin/env bash
# `make demo`: the operator on the local control plane with a sample service. `make demo-down` stops it.
# With the real node up (e2e/cluster/node.sh), the sample is the counter (examples/counter) as real pods;
# otherwise examples/basic.yaml on kwok's fake nodes.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$root/e2e/cluster/versions.sh"
pidfile="$FTSO_CACHE/demo-operator.pid"
log="$FTSO_LOGS/demo-operator.log"
volume=$FTSO_CACHE/node/$FTSO_CLUSTER_NAME/volumes/demo
kubectl() { "$FTSO_BIN/kubectl" --kubeconfig "$FTSO_KUBECONFIG" "$@"; }

stop_operator() {
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" && echo "operator stopped"
  fi
  rm -f "$pidfile"
}

if [[ "${1:-}" == "stop" ]]; then
  kubectl delete -f "$root/examples/basic.yaml" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete -f "$root/examples/counter/counter.yaml" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete pv demo-counter-checkpoints --ignore-not-found --wait=false >/dev/null 2>&1 || true
  stop_operator
  exit 0
fi

if "$root/e2e/cluster/node.sh" status; then sample=counter; else sample=basic; fi

kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established crd/faulttolerantservices.ftso.dev --timeout=60s >/dev/null
stop_operator
mkdir -p "$FTSO_LOGS"
nohup "$root/.venv/bin/ftso" --kubeconfig "$FTSO_KUBECONFIG" run --liveness http://127.0.0.1:8080/healthz \
  >"$log" 2>&1 &
echo $! >"$pidfile"
echo "operator started (pid $(cat "$pidfile"), log: $log)"

if [[ $sample == basic ]]; then
  kubectl apply -f "$root/examples/basic.yaml"
else
  # The counter's checkpoint claim binds to a hostPath volume on the real node, made here.
  mkdir -p "$volume" && chmod 777 "$volume"
  kubectl apply -f - <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: demo-counter-checkpoints}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $volume, type: Directory}
  claimRef: {namespace: default, name: counter-checkpoints}
EOF
  kubectl apply -f "$root/examples/counter/counter.yaml"
fi
if ! kubectl wait --for=condition=Ready "fts/$sample" --timeout=120s >/dev/null; then
  echo "the sample did not become Ready; operator log: $log" >&2
  exit 1
fi
echo
kubectl get fts "$sample" -o wide
echo
kubectl get pods -l "ftso.dev/service=$sample" -o wide -L ftso.dev/role,ftso.dev/serving
echo
kubectl get svc,pdb -l "ftso.dev/service=$sample"

# The pinned kubectl and the plugin (kubectl-ftso lives in the virtualenv) for this shell only: nothing is
# installed outside the checkout. README.md, "The kubectl plugin", shows how to keep it on PATH.
shell_setup="export KUBECONFIG=$FTSO_KUBECONFIG PATH=$FTSO_BIN:$root/.venv/bin:\$PATH"

# Lose the primary, then read what the operator recorded: the newest status.failovers entry and the Events.
failover_steps() {
  cat <<EOT
Lose the primary and see the failover the operator records:
  kubectl delete pod \$(kubectl get fts $1 -o jsonpath='{.status.primary}')   # kill the primary
  kubectl ftso status $1                          # a replica took over; the term went up
  kubectl get fts $1 -o jsonpath='{.status.failovers[-1:]}{"\\n"}'   # the failover record: from, to, term, when
  kubectl get events --field-selector involvedObject.name=$1   # FailoverStarted, FailoverCompleted
EOT
}

if [[ $sample == basic ]]; then
  cat <<EOT

The sample FaultTolerantService 'basic' is Ready (on kwok's fake nodes: the real node is not up). Try:
  $shell_setup
  kubectl delete pod basic-1                      # a replica: replaced within seconds
  kubectl scale fts/basic --replicas=5
  kubectl ftso status basic                       # pods with role, health, node
EOT
  failover_steps basic
  echo "Stop the operator and the sample: make demo-down; stop the cluster: make cluster-down"
  exit 0
fi

primary=$(kubectl get svc counter-primary -o jsonpath='{.spec.clusterIP}')
replicas=$(kubectl get svc counter-replicas -o jsonpath='{.spec.clusterIP}')
cat <<EOT

The counter (examples/counter) runs as real pods on the real node real-0; the primary acknowledges a write
only once every peer has it. From this machine:
  $shell_setup
  for i in \$(seq 100); do curl -s -XPOST http://$primary:8080/increment; echo; done   # 100 writes
  curl -s http://$replicas:8080/value                    # a replica's copy
  kubectl delete pod \$(kubectl get fts counter -o jsonpath='{.status.primary}')   # lose the primary
  kubectl get pods -l ftso.dev/service=counter -L ftso.dev/role                   # a replica took over
  curl -s http://$primary:8080/value                     # still 100: no acknowledged write lost
  kubectl ftso checkpoint counter --wait               # a checkpoint Job copies it to $volume
EOT
failover_steps counter
echo "Stop the operator and the sample: make demo-down; stop the cluster: make cluster-down"
