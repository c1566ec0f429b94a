#!/usr/bin/env bash
# Stops the local control plane and removes every process and file `up.sh` made.
# The build cache (binaries, Go caches) stays, so the next `up` is fast.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

dir=$KWOK_WORKDIR/clusters/$FTSO_CLUSTER_NAME

# The real node first (its kubelet talks to the API server), then the supervisor, or it would start
# again what kwokctl stops.
"$here/node.sh" down
"$here/supervise.sh" stop
if [[ -x "$FTSO_BIN/kwokctl" ]]; then
  "$FTSO_BIN/kwokctl" delete cluster --name "$FTSO_CLUSTER_NAME" >/dev/null 2>&1 || true
fi
# Anything still running from the cluster's directory (a crashed delete) goes too: kwokctl runs every
# component there, and no other cluster's process does.
for proc in /proc/[0-9]*; do
  cwd=$(readlink "$proc/cwd" 2>/dev/null) || continue
  if [[ $cwd == "$dir" || $cwd == "$dir (deleted)" ]]; then
    kill -9 "${proc#/proc/}" 2>/dev/null || true
  fi
done
suffix=${FTSO_CLUSTER_NAME#ftso}
rm -rf "${dir:?}" "$FTSO_KUBECONFIG" "$FTSO_CACHE/kwokctl${suffix:+-$FTSO_CLUSTER_NAME}.yaml"
echo "local cluster '$FTSO_CLUSTER_NAME' is down"
