"""Plain views of the objects the operator observes, built from raw API dicts without I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ftso import names


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    ordinal: int
    node_name: str
    phase: str
    ready: bool
    ready_changed_at: datetime | None
    started_at: datetime | None
    created_at: datetime | None
    deleting: bool
    container_failure: str  # empty unless a container terminated or is crash-looping
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    pod_ip: str = ""

    @property
    def role(self) -> str:
        return self.labels.get(names.LABEL_ROLE, "")

    @property
    def term(self) -> int:
        """The term of the labels this pod carries (0 when none, or not a number)."""
        text = self.annotations.get(names.ANNOTATION_TERM, "")
        return int(text) if text.isdigit() else 0

    @property
    def template_hash(self) -> str:
        return self.annotations.get(names.ANNOTATION_TEMPLATE_HASH, "")


@dataclass(frozen=True)
class NodeView:
    name: str
    ready: bool
    zone: str = ""
    lease_renewed_at: datetime | None = None
    taints: frozenset[str] = frozenset()  # the keys of spec.taints

    @property
    def out_of_service(self) -> bool:
        """Tainted for Kubernetes' non-graceful node shutdown: declared off, so its pods are stopped."""
        return names.TAINT_OUT_OF_SERVICE in self.taints


def ordinal_of(pod_name: str, owner_name: str) -> int:
    suffix = pod_name[len(owner_name) + 1 :] if pod_name.startswith(owner_name + "-") else ""
    return int(suffix) if suffix.isdigit() else -1


def _container_failure(status: Mapping[str, Any]) -> str:
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        terminated = state.get("terminated")
        if terminated:
            reason = terminated.get("reason") or "Terminated"
            return (
                f"container {container.get('name')} terminated: {reason} (exit {terminated.get('exitCode')})"
            )
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in {
            "CrashLoopBackOff",
            "ImagePullBackOff",
            "ErrImagePull",
            "CreateContainerConfigError",
            "RunContainerError",
        }:
            return f"container {container.get('name')} waiting: {waiting['reason']}"
    return ""


def pod_view(raw: Mapping[str, Any], owner_name: str) -> PodView:
    metadata = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    ready_condition: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    return PodView(
        name=metadata.get("name", ""),
        uid=metadata.get("uid", ""),
        ordinal=ordinal_of(metadata.get("name", ""), owner_name),
        node_name=spec.get("nodeName") or "",
        phase=status.get("phase") or "Pending",
        ready=ready_condition.get("status") == "True",
        ready_changed_at=parse_time(ready_condition.get("lastTransitionTime")),
        started_at=parse_time(status.get("startTime")),
        created_at=parse_time(metadata.get("creationTimestamp")),
        deleting=bool(metadata.get("deletionTimestamp")),
        container_failure=_container_failure(status),
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        pod_ip=status.get("podIP") or "",
    )


def node_view(raw: Mapping[str, Any], renewed: datetime | None = None) -> NodeView:
    metadata = raw.get("metadata") or {}
    conditions = (raw.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = (raw.get("spec") or {}).get("taints") or []
    return NodeView(
        name=metadata.get("name", ""),
        ready=ready,
        zone=(metadata.get("labels") or {}).get(names.LABEL_ZONE, ""),
        lease_renewed_at=renewed,
        taints=frozenset(str(t.get("key")) for t in taints if isinstance(t, Mapping) and t.get("key")),
    )
