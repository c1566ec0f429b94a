#!/usr/bin/env bash
# Builds Prometheus's promtool (the real rule checker) from a pinned version through the Go module proxy,
# once, into ~/.cache/ftso/bin ($FTSO_CACHE/bin), and prints its path. A warm second run only checks the stamp.
# Used by tests/test_monitoring.py (`promtool check rules`, `promtool test rules`); `make unit` builds it first.
# A cold build (module downloads included) took 301 s of wall time on two cores at nice 19.
set -euo pipefail

PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
# The same cache as the local control plane's binaries (e2e/cluster/versions.sh).
bin_dir=${FTSO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ftso}/bin
out="$bin_dir/promtool"
stamp="$bin_dir/.promtool.version"

if [[ -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$PROMETHEUS_VERSION" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "hack/promtool.sh: Go is not installed" >&2; exit 1; }
mkdir -p "$bin_dir"
# GOFLAGS from the caller could ask for a vendor directory or -mod=mod; a module@version install wants none.
GOFLAGS=-buildvcs=false GOBIN="$bin_dir" nice -n 19 go install -trimpath -ldflags "-s -w" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >&2
echo "$PROMETHEUS_VERSION" >"$stamp"
echo "$out"
