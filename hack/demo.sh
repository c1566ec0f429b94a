#!/usr/bin/env bash
# `make demo`: the operator on the local control plane with a sample service. `make demo-down` stops it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$root/e2e/cluster/versions.sh"
pidfile="$FTSO_CACHE/demo-operator.pid"
log="$FTSO_LOGS/demo-operator.log"
kubectl() { "$FTSO_BIN/kubectl" --kubeconfig "$FTSO_KUBECONFIG" "$@"; }

stop_operator() {
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" && echo "operator stopped"
  fi
  rm -f "$pidfile"
}

if [[ "${1:-}" == "stop" ]]; then
  kubectl delete -f "$root/examples/basic.yaml" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  stop_operator
  exit 0
fi

kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established crd/faulttolerantservices.ftso.dev --timeout=60s >/dev/null
stop_operator
mkdir -p "$FTSO_LOGS"
nohup "$root/.venv/bin/ftso" --kubeconfig "$FTSO_KUBECONFIG" run --liveness http://127.0.0.1:8080/healthz \
  >"$log" 2>&1 &
echo $! >"$pidfile"
echo "operator started (pid $(cat "$pidfile"), log: $log)"

kubectl apply -f "$root/examples/basic.yaml"
if ! kubectl wait --for=condition=Ready fts/basic --timeout=120s >/dev/null; then
  echo "the sample did not become Ready; operator log: $log" >&2
  exit 1
fi
echo
kubectl get fts basic -o wide
echo
kubectl get pods -l ftso.dev/service=basic -o wide -L ftso.dev/role,ftso.dev/serving
echo
kubectl get svc,pdb -l ftso.dev/service=basic
cat <<EOT

The sample FaultTolerantService 'basic' is Ready. Try:
  export KUBECONFIG=$FTSO_KUBECONFIG
  kubectl delete pod basic-1                      # replaced within seconds
  kubectl scale fts/basic --replicas=5
  $root/.venv/bin/ftso status basic               # pods with role, health, node
Stop the operator and the sample: make demo-down; stop the cluster: make cluster-down
EOT
