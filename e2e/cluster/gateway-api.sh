#!/usr/bin/env bash
# Installs Gateway API's standard-channel CRDs, pinned in versions.sh, from the Go module proxy: the
# objects spec.traffic writes (HTTPRoute on a Gateway). No Gateway controller runs here: a route is
# written and read, and the e2e tests play the controller's part in its status.
#   gateway-api.sh           install (idempotent)
#   gateway-api.sh --remove  delete them again (what a cluster without Gateway API looks like)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

kubectl() { "$FTSO_BIN/kubectl" --kubeconfig "$FTSO_KUBECONFIG" "$@"; }

dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
crds="$dir/config/crd/standard"
[[ -d $crds ]] || { echo "gateway-api $GATEWAY_API_VERSION: no $crds in the Go module cache" >&2; exit 1; }
# Only the CRDs: the bundle's ValidatingAdmissionPolicy guards upgrades of a shared cluster, not needed here.
files=()
for f in "$crds"/gateway.networking.k8s.io_*.yaml; do
  [[ $f == *_vap_* ]] || files+=(-f "$f")
done
if [[ ${1:-} == --remove ]]; then
  kubectl delete --ignore-not-found --wait=true "${files[@]}" >/dev/null
  exit 0
fi
kubectl apply --server-side --force-conflicts "${files[@]}" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/httproutes.gateway.networking.k8s.io crd/gateways.gateway.networking.k8s.io >/dev/null
