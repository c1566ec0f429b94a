"""Conditions in the metav1.Condition shape, whose transition times survive unchanged reconciles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

READY = "Ready"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
INVALID_SPEC = "InvalidSpec"
PRIMARY_UNAVAILABLE = "PrimaryUnavailable"
FAILING_OVER = "FailingOver"
CHECKPOINT_SUCCEEDED = "CheckpointSucceeded"
NODE_LOSS_SUSPENDED = "NodeLossSuspended"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def merge_conditions(
    previous: Iterable[Mapping[str, Any]], current: Iterable[Condition], *, generation: int, now: str
) -> list[dict[str, Any]]:
    """The new conditions list; lastTransitionTime moves only when a condition's status flips."""
    before = {c.get("type"): c for c in previous}
    merged: list[dict[str, Any]] = []
    for condition in current:
        status = "True" if condition.status else "False"
        old = before.get(condition.type) or {}
        merged.append(
            {
                "type": condition.type,
                "status": status,
                "observedGeneration": generation,
                "lastTransitionTime": old.get("lastTransitionTime", now)
                if old.get("status") == status
                else now,
                "reason": condition.reason,
                "message": condition.message,
            }
        )
    return merged


def is_true(conditions: Iterable[Mapping[str, Any]], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)
