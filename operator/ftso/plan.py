"""What one reconcile decided: the actions for `Controller.execute` and the complete new status. Plain data,
no I/O: the pure core builds it, the I/O side carries it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftso.status import FtsStatus


@dataclass(frozen=True)
class MetadataRemoval:
    """Fields to take off an owned object (a Service or the PDB), as a merge patch: labels and annotations
    the spec no longer asks for, a selector <name>-primary no longer has."""

    kind: str
    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class PodDelete:
    name: str
    uid: str
    force: bool
    reason: str


@dataclass(frozen=True)
class PodPatch:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal or Warning
    reason: str  # names.EventReason
    message: str


@dataclass(frozen=True)
class HookCall:
    """A promote or demote hook: an HTTP call to a workload pod, made after the labels moved."""

    pod: str
    url: str
    role: str
    term: int
    timeout_seconds: float


@dataclass
class Plan:
    status: FtsStatus
    # Every status write carries the resource's resourceVersion: two writers can never both promote.
    write_status: bool = False
    patches: list[PodPatch] = field(default_factory=list)  # in order: demotions first
    routing: dict[str, Any] | None = None  # <name>-primary's EndpointSlice, applied right after the patches
    owned_deletes: list[tuple[str, str]] = field(default_factory=list)  # (kind, name): slices not ours
    deletes: list[PodDelete] = field(default_factory=list)
    creates: list[dict[str, Any]] = field(default_factory=list)
    owned_creates: list[dict[str, Any]] = field(default_factory=list)  # Services and the PDB, when missing
    applies: list[dict[str, Any]] = field(default_factory=list)  # ... and when someone changed them
    # Before those applies: keys the spec no longer asks for (the apply then records what it does ask for).
    metadata_removals: list[MetadataRemoval] = field(default_factory=list)
    events: list[EventSpec] = field(default_factory=list)
    hooks: list[HookCall] = field(default_factory=list)  # after the labels moved
    # The term of the change of primary those hooks announce: once called, its record says so in status.
    hooks_term: int = 0
    job_creates: list[dict[str, Any]] = field(default_factory=list)
    job_deletes: list[str] = field(default_factory=list)
    # spec.traffic's HTTPRoute and provider object (not watched: the controller keeps what it wrote)
    traffic_applies: list[dict[str, Any]] = field(default_factory=list)
    traffic_deletes: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    requeue_after: float | None = None
    promotion: str = ""  # why a new primary was chosen, when one was (names.Promotion)
    routed: bool = False  # a change of primary became routed in this reconcile

    @property
    def acts(self) -> bool:
        return bool(
            self.patches
            or self.routing is not None
            or self.owned_deletes
            or self.deletes
            or self.creates
            or self.owned_creates
            or self.applies
            or self.metadata_removals
            or self.job_creates
            or self.job_deletes
            or self.traffic_applies
            or self.traffic_deletes
        )
