#!/usr/bin/env python3
"""Packs directories as an image archive that `ctr images import` reads, in the docker-save layout
(manifest.json, CONFIG.json, LAYER/layer.tar) with an OCI image config: containerd normalises its RepoTags
itself, so a short name such as `counter:dev` is found by the kubelet as the pod spec writes it.
Standard library only; layers are uncompressed, reproducible tars (sorted, fixed mtime).

    oci_pack.py OUT.tar --tag NAME:TAG --config CONFIG.json LAYER_DIR [LAYER_DIR...]

CONFIG.json holds the image's runtime `config` (Entrypoint, Cmd, Env, User, WorkingDir...).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

SKIP_CONTENTS = {"dev", "proc", "sys", "run", "tmp"}  # kept as empty directories (tmp with its mode)


def layer_tar(root: Path, out: Path) -> None:
    def add(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
        info = tar.gettarinfo(str(path), arcname)
        info.mtime = 0
        if info.isfile():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            for name in sorted(dirnames + filenames):
                arc = name if rel == "." else f"{rel}/{name}"
                add(tar, Path(dirpath) / name, arc)
            # Pseudo filesystems' mount points are kept, empty.
            dirnames[:] = sorted(d for d in dirnames if rel != "." or d not in SKIP_CONTENTS)


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest(), path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("layers", nargs="+")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=Path(args.out).parent) as tmp:
        blobs = Path(tmp) / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layers = []
        for i, layer in enumerate(args.layers):
            raw = Path(tmp) / f"layer{i}.tar"
            layer_tar(Path(layer), raw)
            digest, size = sha256_file(raw)
            os.replace(raw, blobs / digest)
            layers.append((digest, size))

        def blob(data: bytes) -> tuple[str, int]:
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            return digest, len(data)

        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": json.loads(Path(args.config).read_text()),
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d, _ in layers]},
        }
        cfg_digest, _ = blob(json.dumps(config, sort_keys=True).encode())
        # The docker-save layout (manifest.json, CONFIG.json, LAYER/layer.tar): containerd 1.6 names the
        # image after its RepoTags, normalised; the same blobs in OCI form would import unnamed.
        docker_manifest = [
            {
                "Config": f"{cfg_digest}.json",
                "RepoTags": [args.tag],
                "Layers": [f"{d}/layer.tar" for d, _ in layers],
            }
        ]
        tmp_out = Path(args.out + ".tmp")
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as tar:

            def put(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

            put("manifest.json", json.dumps(docker_manifest).encode())
            tar.add(str(blobs / cfg_digest), f"{cfg_digest}.json")
            for d, _ in layers:
                tar.add(str(blobs / d), f"{d}/layer.tar")
        os.replace(tmp_out, args.out)
    print(f"{args.out}: {args.tag}, {len(layers)} layer(s), config sha256:{cfg_digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
