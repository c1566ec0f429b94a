"""`ftso report NAME`: a support bundle. The resource, its pods, Services, PDB and checkpoint Jobs, the
Events about any of them, and the operator's log when it runs in the cluster, as YAML and text in one
.tar.gz. Collecting is best effort: what cannot be read (RBAC, an operator outside the cluster) is named in
the bundle's README.txt instead of failing the whole report."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ftso import __version__, kinds, names
from ftso.client import ApiError, KubeClient

DEFAULT_LOG_LINES = 2000
# The owned kinds as the bundle names them, listed by the resource's label.
OWNED_FILES = (
    (kinds.POD, "pods.yaml"),
    (kinds.SERVICE, "services.yaml"),
    (kinds.PDB, "poddisruptionbudgets.yaml"),
    (kinds.JOB, "jobs.yaml"),
)


@dataclass
class Bundle:
    files: dict[str, str] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)  # what could not be collected, and why


def without_managed_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": metadata}


def as_yaml(items: Iterable[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([without_managed_fields(i) for i in items], sort_keys=False)


def _names(items: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str((i.get("metadata") or {}).get("name")) for i in items}


async def _owned(client: KubeClient, namespace: str, name: str, bundle: Bundle) -> set[str]:
    """Writes each owned kind's file; returns the names of everything found, for the Events."""
    involved = {name}
    for kind, filename in OWNED_FILES:
        try:
            items = await client.list(kind.kind, namespace, f"{names.LABEL_SERVICE}={name}")
        except ApiError as error:
            bundle.gaps.append(f"{filename}: {error}")
            continue
        bundle.files[filename] = as_yaml(items)
        involved |= _names(items)
    return involved


async def _events(client: KubeClient, namespace: str, involved: set[str], bundle: Bundle) -> None:
    try:
        events = await client.list(kinds.EVENT.kind, namespace)
    except ApiError as error:
        bundle.gaps.append(f"events.yaml: {error}")
        return
    about = [e for e in events if (e.get("involvedObject") or {}).get("name") in involved]
    about.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    bundle.files["events.yaml"] = as_yaml(about)


async def _operator_logs(client: KubeClient, log_lines: int, bundle: Bundle) -> None:
    try:
        pods = await client.list(kinds.POD.kind, None, names.OPERATOR_POD_SELECTOR)
    except ApiError as error:
        bundle.gaps.append(f"operator logs: listing pods with {names.OPERATOR_POD_SELECTOR}: {error}")
        return
    if not pods:
        bundle.gaps.append(
            f"operator logs: no pods labelled {names.OPERATOR_POD_SELECTOR} (is the operator running "
            "outside the cluster? then add its log yourself)"
        )
    for pod in pods:
        metadata = pod.get("metadata") or {}
        namespace, pod_name = str(metadata.get("namespace")), str(metadata.get("name"))
        for container in (pod.get("spec") or {}).get("containers") or []:
            where = f"operator/{namespace}/{pod_name}/{container.get('name')}.log"
            try:
                log = await client.pod_log(
                    namespace, pod_name, str(container.get("name")), tail_lines=log_lines
                )
            except ApiError as error:
                bundle.gaps.append(f"{where}: {error}")
                continue
            bundle.files[where] = log


async def collect(client: KubeClient, namespace: str, name: str, *, log_lines: int) -> Bundle:
    """Raises ApiError only when the resource itself cannot be read."""
    resource = await client.get(names.KIND, namespace, name)
    bundle = Bundle(files={"faulttolerantservice.yaml": as_yaml([resource])})
    involved = await _owned(client, namespace, name, bundle)
    await _events(client, namespace, involved, bundle)
    await _operator_logs(client, log_lines, bundle)
    bundle.files["README.txt"] = readme(namespace, name, bundle)
    return bundle


def readme(namespace: str, name: str, bundle: Bundle) -> str:
    lines = [
        f"Support bundle of {names.KIND} {namespace}/{name}, by ftso {__version__} at "
        f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}.",
        "It holds the objects as the API server returned them (pod templates may carry environment values:",
        "review them before sharing).",
        "",
        "Files: " + ", ".join(sorted(bundle.files)),
    ]
    if bundle.gaps:
        lines += ["", "Not collected:", *(f"- {gap}" for gap in bundle.gaps)]
    return "\n".join(lines) + "\n"


def default_path(namespace: str, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"ftso-report-{namespace}-{name}-{stamp}.tar.gz")


def write_archive(files: Mapping[str, str], path: Path) -> None:
    """One directory named like the archive, the files in it."""
    top = path.name.removesuffix(".tar.gz")
    now = time.time()
    with tarfile.open(path, "w:gz") as archive:
        for filename, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{filename}")
            info.size, info.mtime, info.mode = len(data), int(now), 0o644
            archive.addfile(info, io.BytesIO(data))
