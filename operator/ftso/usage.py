"""Health from measured usage (spec.health.metrics), pure: samples from metrics.k8s.io in, each pod's breach
state and verdict out. A breach counts only once samples show it for `forSeconds`; it ends only below the
lower `recoverBelow` (hysteresis); a missing or stale sample judges nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ftso.api.spec import MetricsHealthSpec, Threshold, parse_quantity
from ftso.model import PodView, parse_time
from ftso.names import Health


@dataclass(frozen=True)
class PodUsage:
    """One PodMetrics sample: the pod's containers summed."""

    cpu: float  # cores
    memory: float  # bytes
    at: datetime  # when it was measured


def pod_usage(raw: Mapping[str, Any]) -> PodUsage | None:
    """A PodMetrics object (metrics.k8s.io/v1beta1) as a sample; None when it has no time or usage."""
    at = parse_time(raw.get("timestamp"))
    containers = raw.get("containers") or []
    if at is None or not containers:
        return None
    cpu = memory = 0.0
    for container in containers:
        usage = container.get("usage") or {}
        cpu += parse_quantity(str(usage.get("cpu", "0"))) or 0.0
        memory += parse_quantity(str(usage.get("memory", "0"))) or 0.0
    return PodUsage(cpu, memory, at)


def fresh(sample: PodUsage | None, pod: PodView, spec: MetricsHealthSpec, now: datetime) -> bool:
    """Recent, and measured on this pod: a replacement of the same name starts without its predecessor's."""
    if sample is None or (now - sample.at).total_seconds() > spec.stale_after_seconds:
        return False
    born = pod.started_at or pod.created_at
    return born is None or sample.at > born


def _format(resource: str, value: float) -> str:
    return f"{value * 1000:.0f}m" if resource == "cpu" else f"{value / 2**20:.0f}Mi"


def _over(spec: MetricsHealthSpec, sample: PodUsage) -> list[str]:
    found = []
    for resource, threshold, value in (("cpu", spec.cpu, sample.cpu), ("memory", spec.memory, sample.memory)):
        if threshold is not None and value > threshold.above:
            found.append(f"{resource} {_format(resource, value)} above {_format(resource, threshold.above)}")
    return found


def _recovered(spec: MetricsHealthSpec, sample: PodUsage) -> bool:
    pairs: list[tuple[Threshold | None, float]] = [(spec.cpu, sample.cpu), (spec.memory, sample.memory)]
    return all(threshold is None or value < threshold.recover_below for threshold, value in pairs)


def breach_since(
    spec: MetricsHealthSpec, sample: PodUsage | None, previous: datetime | None, is_fresh: bool
) -> datetime | None:
    """When the pod's breach began (status keeps it), after this sample; between the two thresholds and
    without a fresh sample it stays as it was."""
    if sample is None or not is_fresh:
        return previous
    if _over(spec, sample):
        return previous or sample.at
    return None if _recovered(spec, sample) else previous


@dataclass(frozen=True)
class MetricsVerdict:
    health: Health  # Degraded, or Failed once the pod is to be replaced
    reason: str
    since: datetime  # when the breach became sustained: a primary's failover delay counts from here


def metrics_verdict(
    spec: MetricsHealthSpec, sample: PodUsage | None, since: datetime | None, is_fresh: bool
) -> MetricsVerdict | None:
    """Degraded once samples show the breach for `forSeconds`, Failed `replaceAfterSeconds` later; nothing
    on a stale or missing sample. Durations are measured between samples, not on the operator's clock."""
    if sample is None or since is None or not is_fresh or not (over := _over(spec, sample)):
        return None
    lasted = (sample.at - since).total_seconds()
    if lasted < spec.for_seconds:
        return None
    sustained = since + timedelta(seconds=spec.for_seconds)
    reason = f"{', '.join(over)} for {lasted:.0f}s"
    if spec.replace_after_seconds and lasted >= spec.for_seconds + spec.replace_after_seconds:
        return MetricsVerdict(Health.FAILED, reason + ": replaced", sustained)
    return MetricsVerdict(Health.DEGRADED, reason + ": drained", sustained)
