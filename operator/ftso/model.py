"""Plain views of the objects the operator observes, built from raw API dicts without I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

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


class PodSeen(NamedTuple):
    """When the operator, by its own clock, first saw a pod in its current Ready state and first saw it
    started: a kubelet's timestamps are its own clock's, which may be minutes off either way."""

    ready: bool
    ready_at: datetime
    started_at: datetime | None


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
    # The operator's own clock (PodSeen): what every duration of the pod's health is measured from.
    ready_seen_at: datetime | None = None
    started_seen_at: datetime | None = None

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
    # When the view saw this node deleted, by the operator's clock: a node the view never held is not here.
    deleted_at: datetime | None = None
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


def pod_view(raw: Mapping[str, Any], owner_name: str, seen: PodSeen | None = None) -> PodView:
    """Without `seen` (a tool or a test without a watch) the kubelet's clock is taken to agree with ours."""
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
        **_seen_times(seen, ready_condition, status, metadata),
    )


def _seen_times(
    seen: PodSeen | None, ready: Mapping[str, Any], status: Mapping[str, Any], metadata: Mapping[str, Any]
) -> dict[str, datetime | None]:
    if seen is not None:
        return {"ready_seen_at": seen.ready_at, "started_seen_at": seen.started_at}
    started = parse_time(status.get("startTime")) or parse_time(metadata.get("creationTimestamp"))
    return {"ready_seen_at": parse_time(ready.get("lastTransitionTime")), "started_seen_at": started}


def pod_seen(raw: Mapping[str, Any], before: PodSeen | None, now: datetime) -> PodSeen:
    """What the operator has seen of a pod by `now`, given what it had seen before (None: never)."""
    status = raw.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    started = bool(status.get("startTime")) or status.get("phase") not in (None, "Pending")
    if before is None:
        return PodSeen(ready, now, now if started else None)
    ready_at = before.ready_at if before.ready == ready else now
    started_at = before.started_at or (now if started else None)
    if (ready_at, started_at) == (before.ready_at, before.started_at):
        return before  # unchanged: no new object per event
    return PodSeen(ready, ready_at, started_at)


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
