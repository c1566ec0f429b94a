#!/usr/bin/env bash
# Stops the local control plane and removes every process and file `up.sh` made.
# The build cache (binaries, Go caches) stays, so the next `up` is fast.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

if [[ -x "$FTSO_BIN/kwokctl" ]]; then
  "$FTSO_BIN/kwokctl" delete cluster --name "$FTSO_CLUSTER_NAME" >/dev/null 2>&1 || true
fi
# Anything still running from the cluster's workdir (a crashed delete) goes too.
pkill -f "$KWOK_WORKDIR/clusters/$FTSO_CLUSTER_NAME" 2>/dev/null || true
rm -rf "${KWOK_WORKDIR:?}/clusters/$FTSO_CLUSTER_NAME" "$FTSO_KUBECONFIG" "$FTSO_CACHE/kwokctl.yaml"
echo "local cluster '$FTSO_CLUSTER_NAME' is down"
