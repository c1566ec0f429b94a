#!/usr/bin/env bash
# Builds the local control plane's binaries from pinned versions through the Go module proxy,
# once, into a cache outside the repository. A warm second run only checks the stamps.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

mkdir -p "$FTSO_BIN" "$FTSO_LOGS" "$FTSO_CACHE/src"
log="$FTSO_LOGS/build.log"

fail() {
  echo "ftso cluster build: $1 (log: $log)" >&2
  exit 1
}

command -v go >/dev/null 2>&1 || fail "Go is not installed; the local control plane needs Go 1.26+"

stamp_ok() { # name version
  [[ -x "$FTSO_BIN/$1" && -f "$FTSO_BIN/.$1.version" && "$(cat "$FTSO_BIN/.$1.version")" == "$2" ]]
}
stamp() { echo "$2" >"$FTSO_BIN/.$1.version"; }

build_kubernetes() {
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) missing=() name
  for name in "${wanted[@]}"; do stamp_ok "$name" "$K8S_VERSION" || missing+=("$name"); done
  ((${#missing[@]})) || return 0
  echo "building ${missing[*]} $K8S_VERSION"
  local dir="$FTSO_CACHE/src/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  local upstream_mod
  upstream_mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$upstream_mod" ]] || return 1
  local staging_version="v0${K8S_VERSION#v1}"
  {
    echo "module ftso.dev/controlplane"
    echo
    grep -E '^go [0-9]' "$upstream_mod"
    grep -E '^godebug ' "$upstream_mod" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # Every staging module the tag replaces with a local path is taken at its published version instead.
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$upstream_mod"
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
EOF
  (cd "$dir" && go mod tidy -e) || return 1
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for name in "${missing[@]}"; do
    (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$FTSO_BIN/$name" "k8s.io/kubernetes/cmd/$name") || return 1
    stamp "$name" "$K8S_VERSION"
  done
}

build_etcd() {
  stamp_ok etcd "$ETCD_VERSION" && return 0
  echo "building etcd $ETCD_VERSION"
  # etcd's server module has relative replace lines, so `go install pkg@version` refuses it: wrap it.
  local dir="$FTSO_CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  printf 'module ftso.dev/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
  (cd "$dir" && go mod tidy -e && go build -trimpath -ldflags "-s -w" -o "$FTSO_BIN/etcd" go.etcd.io/etcd/server/v3) || return 1
  stamp etcd "$ETCD_VERSION"
}

build_go_install() { # name package version
  stamp_ok "$1" "$3" && return 0
  echo "building $1 $3"
  GOBIN="$FTSO_BIN" go install -trimpath -ldflags "-s -w $4" "$2@$3" || return 1
  stamp "$1" "$3"
}

start=$(date +%s)
{
  echo "=== build $(date -u +%FT%TZ)"
  build_etcd || fail "etcd $ETCD_VERSION failed to build"
  build_kubernetes || fail "kubernetes $K8S_VERSION failed to build"
  build_go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" || fail "kwok $KWOK_VERSION failed to build"
  build_go_install kwokctl sigs.k8s.io/kwok/cmd/kwokctl "$KWOK_VERSION" \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" || fail "kwokctl $KWOK_VERSION failed to build"
  build_go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" || fail "helm $HELM_VERSION failed to build"
  # kwokctl reads the version from `metrics-server --version`, which client-go's version variable answers.
  build_go_install metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server "$METRICS_SERVER_VERSION" \
    "-X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" ||
    fail "metrics-server $METRICS_SERVER_VERSION failed to build"
} > >(tee -a "$log") 2>>"$log"
echo "control-plane binaries ready in $FTSO_BIN ($(($(date +%s) - start)) s)"
