"""Who is primary: the pure decisions of election, failover and switchover (PrimaryReplica mode)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ftso.health import Health, Verdict
from ftso.model import PodView


@dataclass(frozen=True)
class RoleDecision:
    primary: str
    term: int
    reason: str = ""  # empty when the primary stays; else Elected, Failover, ScaleDown or RollingUpdate
    previous: str = ""


def candidate_rank(pod: PodView) -> tuple[int, int]:
    """Lower is better: ties between equally healthy replicas go to the lowest ordinal."""
    return (0, pod.ordinal)


def best_candidate(
    pods: Iterable[PodView], verdicts: Mapping[str, Verdict], *, replicas: int, exclude: str = ""
) -> PodView | None:
    candidates = [
        p
        for p in pods
        if p.name != exclude and 0 <= p.ordinal < replicas and verdicts[p.name].health == Health.HEALTHY
    ]
    return min(candidates, key=candidate_rank, default=None)


def decide_primary(
    *,
    primary: str,
    term: int,
    pods: Mapping[str, PodView],
    verdicts: Mapping[str, Verdict],
    replicas: int,
    updated: Mapping[str, bool],
    rollout_wants_primary: bool,
) -> RoleDecision:
    current = pods.get(primary) if primary else None
    if current is None or verdicts[current.name].gone:
        best = best_candidate(pods.values(), verdicts, replicas=replicas, exclude=primary)
        if best is None:
            return RoleDecision(primary="", term=term, reason="" if not primary else "Lost", previous=primary)
        return RoleDecision(best.name, term + 1, "Failover" if primary else "Elected", primary)
    if not 0 <= current.ordinal < replicas:
        best = best_candidate(pods.values(), verdicts, replicas=replicas, exclude=primary)
        if best is not None:
            return RoleDecision(best.name, term + 1, "ScaleDown", primary)
    elif rollout_wants_primary:
        fresh = [p for p in pods.values() if updated.get(p.name)]
        best = best_candidate(fresh, verdicts, replicas=replicas, exclude=primary)
        if best is not None:
            return RoleDecision(best.name, term + 1, "RollingUpdate", primary)
    return RoleDecision(primary, term)
