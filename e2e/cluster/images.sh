#!/usr/bin/env bash
# The real node's images, built without a registry and cached under $FTSO_CACHE/images:
#   pause.oci.tar    the sandbox image (pause:3.10): Kubernetes' pause.c, compiled static with gcc
#   counter.oci.tar  counter:dev: a Debian minimal root filesystem (debootstrap) + python3 + examples/counter
# Each is an OCI archive (e2e/cluster/oci_pack.py) that `ctr images import` takes. Rebuilt only when an
# input changes (the counter's source, this script). `images.sh build` builds; node.sh imports them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

DEBIAN_SUITE=bookworm
PAUSE_VERSION=3.10
images=$FTSO_CACHE/images
log=$FTSO_LOGS/images.log
mkdir -p "$images" "$FTSO_LOGS"

fail() {
  echo "ftso images: $1 (log: $log)" >&2
  exit 1
}

mirror() { # the Debian mirror apt already uses on this machine
  local uri
  uri=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v -- -security | head -n 1)
  [[ -n $uri ]] || fail "no Debian mirror in /etc/apt/sources.list(.d)"
  echo "$uri"
}

base_rootfs() { # a minimal Debian with python3, made once
  local dir=$images/rootfs-$DEBIAN_SUITE
  [[ -f $dir/.complete ]] && return 0
  command -v debootstrap >/dev/null || fail "debootstrap is missing (apt-get install debootstrap)"
  echo "debootstrap $DEBIAN_SUITE (minbase + python3)"
  rm -rf "$dir.tmp"
  # python3-minimal has no http.server: libpython3.11-stdlib brings it.
  debootstrap --variant=minbase --include=python3-minimal,libpython3.11-stdlib \
    "$DEBIAN_SUITE" "$dir.tmp" "$(mirror)" >>"$log" 2>&1 || fail "debootstrap failed"
  rm -rf "$dir.tmp"/var/cache/apt/* "$dir.tmp"/var/lib/apt/lists/* "$dir.tmp"/usr/share/doc \
    "$dir.tmp"/usr/share/man "$dir.tmp"/usr/share/locale "$dir.tmp"/var/log/*
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  touch "$dir/.complete"
}

inputs_hash() { # files...: what an image is made of
  cat "$@" "$0" "$here/oci_pack.py" | sha256sum | cut -c1-16
}

pause_image() {
  local kdir src out=$images/pause.oci.tar
  kdir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  src=$kdir/build/pause/linux/pause.c
  [[ -f $src ]] || fail "pause.c not found in k8s.io/kubernetes@$K8S_VERSION"
  local want
  want=$(inputs_hash "$src")
  [[ -f $out && $(cat "$out.stamp" 2>/dev/null) == "$want" ]] && return 0
  echo "building $out"
  local work=$images/pause.work
  rm -rf "$work" && mkdir -p "$work/layer"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-ftso" -o "$work/layer/pause" "$src" >>"$log" 2>&1 ||
    fail "gcc could not build pause.c statically"
  strip "$work/layer/pause" 2>/dev/null || true
  echo '{"Entrypoint": ["/pause"], "User": "65535:65535"}' >"$work/config.json"
  python3 "$here/oci_pack.py" "$out" --tag "pause:$PAUSE_VERSION" --config "$work/config.json" "$work/layer" >>"$log"
  echo "$want" >"$out.stamp"
  rm -rf "$work"
}

counter_image() {
  local out=$images/counter.oci.tar src=$root/examples/counter/counter.py want
  want=$(inputs_hash "$src")
  [[ -f $out && $(cat "$out.stamp" 2>/dev/null) == "$want" ]] && return 0
  base_rootfs
  echo "building $out"
  local base=$images/rootfs-$DEBIAN_SUITE work=$images/counter.work
  rm -rf "$work" && mkdir -p "$work/layer/app" "$work/layer/etc" "$work/layer/data"
  cp "$src" "$work/layer/app/counter.py"
  # As examples/counter/Dockerfile: a fixed non-root uid 10001 that owns /data.
  cp "$base/etc/passwd" "$base/etc/group" "$work/layer/etc/"
  echo "counter:x:10001:10001::/nonexistent:/usr/sbin/nologin" >>"$work/layer/etc/passwd"
  echo "counter:x:10001:" >>"$work/layer/etc/group"
  chown 10001:10001 "$work/layer/data"
  cat >"$work/config.json" <<'EOF'
{
  "Entrypoint": ["python3", "/app/counter.py"],
  "Cmd": ["serve", "--host", "0.0.0.0", "--port", "8080"],
  "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONUNBUFFERED=1",
          "PYTHONDONTWRITEBYTECODE=1"],
  "User": "10001",
  "WorkingDir": "/app",
  "ExposedPorts": {"8080/tcp": {}}
}
EOF
  python3 "$here/oci_pack.py" "$out" --tag counter:dev --config "$work/config.json" "$base" "$work/layer" >>"$log" ||
    fail "could not pack $out"
  echo "$want" >"$out.stamp"
  rm -rf "$work"
}

case ${1:-build} in
  build)
    start=$(date +%s)
    {
      echo "=== images $(date -u +%FT%TZ)"
      pause_image
      counter_image
    } > >(tee -a "$log")
    echo "images ready in $images ($(($(date +%s) - start)) s)"
    ;;
  *)
    echo "usage: $0 [build]" >&2
    exit 2
    ;;
esac
