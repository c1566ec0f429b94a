"""Conditions in the metav1.Condition shape, whose transition times survive unchanged reconciles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ftso.names import ConditionType
from ftso.status import ConditionRecord


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: bool
    reason: str
    message: str = ""


def merge_conditions(
    previous: Iterable[Mapping[str, Any]], current: Iterable[Condition], *, generation: int, now: str
) -> list[ConditionRecord]:
    """The new conditions list; lastTransitionTime moves only when a condition's status flips."""
    before = {c.get("type"): c for c in previous}
    merged: list[ConditionRecord] = []
    for condition in current:
        status = "True" if condition.status else "False"
        old = before.get(condition.type) or {}
        merged.append(
            {
                "type": str(condition.type),
                "status": status,
                "observedGeneration": generation,
                "lastTransitionTime": old.get("lastTransitionTime", now)
                if old.get("status") == status
                else now,
                "reason": str(condition.reason),
                "message": condition.message,
            }
        )
    return merged


def is_true(conditions: Iterable[Mapping[str, Any]], type_: ConditionType) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)


def reason_of(conditions: Iterable[Mapping[str, Any]], type_: ConditionType) -> str:
    return next((str(c.get("reason") or "") for c in conditions if c.get("type") == type_), "")
