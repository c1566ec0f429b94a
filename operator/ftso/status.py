"""The shapes of what the operator writes to status, checked by mypy. Status read back from the API is
untrusted input: `failover_records` and friends copy it into these shapes, keeping what they find."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast

# One change of primary. "from" is a keyword, hence the functional form.
FailoverRecord = TypedDict(
    "FailoverRecord",
    {
        "term": int,
        "kind": str,  # names.ChangeKind
        "reason": str,  # names.Promotion, then ": what was wrong" for a failover
        "from": str,
        "to": str,
        "detectedAt": str,
        "decidedAt": str,
        "routedAt": NotRequired[str],  # <name>-primary routes to exactly the new primary
        "fenceUid": NotRequired[str],  # the failed primary, by uid: kept out of every Service until gone
        "fencedAt": NotRequired[str],
        # The promote and demote hooks of this change were called: until then every reconcile calls them.
        "hooksCalledAt": NotRequired[str],
    },
)


class CheckpointRecord(TypedDict):
    id: str
    job: str
    result: str  # names.CheckpointResult
    sourcePod: str
    term: int
    startedAt: str
    reason: NotRequired[str]
    finishedAt: NotRequired[str]
    durationSeconds: NotRequired[int]


class ScheduleState(TypedDict, total=False):
    lastScheduleTime: str
    lastRequest: str


class Recovery(TypedDict, total=False):
    checkpoint: str
    startedAt: str
    dataLossWindowSeconds: int
    completedAt: str


class SwitchoverAnswer(TypedDict):
    request: str
    result: str  # names.SwitchoverResult
    message: str
    at: str


class PodStatus(TypedDict):
    name: str
    node: str
    zone: str
    role: str
    health: str  # names.Health
    serving: bool
    since: str
    reason: str
    updated: bool
    restoredFrom: NotRequired[str]
    weight: NotRequired[int]  # in the HTTPRoute (traffic.policy Weighted)
    breachSince: NotRequired[
        str
    ]  # over a health.metrics threshold since then (gaps in the samples not counted)
    breachSampledAt: NotRequired[str]  # the newest sample of the breach
    loadSampledAt: NotRequired[str]  # the usage sample its load-following weight last moved on


class UnreachablePod(TypedDict):
    """A pod seen on an unreachable node: kept after its API object is gone, until the node is proven
    stopped or trusted again, since its process may still run there."""

    name: str
    uid: str
    node: str
    since: str  # first seen there


class ConditionRecord(TypedDict):
    type: str
    status: str
    observedGeneration: int
    lastTransitionTime: str
    reason: str
    message: str


class FtsStatus(TypedDict):
    observedGeneration: int
    phase: str
    replicas: int
    readyReplicas: int
    servingReplicas: int
    updatedReplicas: int
    selector: str
    primary: str
    term: int
    pods: list[PodStatus]
    failovers: list[FailoverRecord]
    # decidedAt of the unplanned failovers failover.maxPerHour counts: the history's bound does not limit it
    failoverTimes: list[str]
    unreachablePods: list[UnreachablePod]
    checkpoints: list[CheckpointRecord]
    lastSuccessfulCheckpoint: str
    checkpointSchedule: ScheduleState
    recovery: Recovery
    switchover: SwitchoverAnswer | dict[str, Any]  # empty until the first request
    conditions: list[ConditionRecord]


def _records(status: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    return [dict(r) for r in status.get(key) or [] if isinstance(r, Mapping)]


def failover_records(status: Mapping[str, Any]) -> list[FailoverRecord]:
    """Copies, so a decision never changes what it was given."""
    return cast(list[FailoverRecord], _records(status, "failovers"))


def checkpoint_records(status: Mapping[str, Any]) -> list[CheckpointRecord]:
    return cast(list[CheckpointRecord], _records(status, "checkpoints"))


def schedule_state(status: Mapping[str, Any]) -> ScheduleState:
    return cast(ScheduleState, dict(status.get("checkpointSchedule") or {}))


def recovery_state(status: Mapping[str, Any]) -> Recovery:
    return cast(Recovery, dict(status.get("recovery") or {}))


def failover_times_state(status: Mapping[str, Any], limit: int) -> list[str]:
    """status.failoverTimes as strings, at most the newest `limit` (the CRD's bound; status is untrusted)."""
    raw = status.get("failoverTimes")
    return [t for t in raw[-limit:] if isinstance(t, str)] if isinstance(raw, list) else []


def unreachable_pods(status: Mapping[str, Any], limit: int) -> list[UnreachablePod]:
    """status.unreachablePods, entries of the right shape only, at most `limit` (status is untrusted)."""
    raw = status.get("unreachablePods")
    entries = [e for e in raw[:limit] if isinstance(e, Mapping)] if isinstance(raw, list) else []
    keys = ("name", "uid", "node", "since")
    return [
        cast(UnreachablePod, {k: e[k] for k in keys})
        for e in entries
        if all(isinstance(e.get(k), str) and e.get(k) for k in keys)
    ]
