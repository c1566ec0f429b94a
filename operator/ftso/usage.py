"""Health from measured usage (spec.health.metrics), pure: samples from metrics.k8s.io in, each pod's breach
state and verdict out. A breach counts only the time samples show it for (`forSeconds`); it ends only below
the lower `recoverBelow` (hysteresis); a missing or stale sample judges nothing. PodMetrics come from an
aggregated API that nobody schema-checks: a malformed one is rejected with the reason, never trusted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ftso.api.spec import MetricsHealthSpec, Threshold, parse_quantity
from ftso.model import PodView, parse_time
from ftso.names import Health

# In a pod's reason: over a threshold, but not drained (usage never takes more pods out than the budget).
KEPT_SERVING = "kept serving"
# Longer than any quantity metrics-server writes: a longer one is garbage, not a number to parse.
QUANTITY_LIMIT = 64


@dataclass(frozen=True)
class PodUsage:
    """One PodMetrics sample: the pod's containers summed."""

    cpu: float  # cores
    memory: float  # bytes
    at: datetime  # when it was measured


class MalformedSample(ValueError):
    """A PodMetrics object that is not one: its message says what is wrong."""


def _quantity(usage: Mapping[str, Any], resource: str) -> float:
    raw = usage.get(resource, "0")
    if not isinstance(raw, str) or len(raw) > QUANTITY_LIMIT:
        raise MalformedSample(f"usage.{resource} is not a quantity: {str(raw)[:32]!r}")
    value = parse_quantity(raw)
    if value is None or not math.isfinite(value):
        raise MalformedSample(f"usage.{resource} is not a quantity: {raw[:32]!r}")
    return value


def pod_usage(raw: Any) -> PodUsage | None:
    """A PodMetrics object (metrics.k8s.io/v1beta1) as a sample; None when it has no usage yet (a pod just
    started). MalformedSample when it is not a PodMetrics: a time without a zone, entries of the wrong type,
    quantities that are not quantities."""
    if not isinstance(raw, Mapping):
        raise MalformedSample("not an object")
    at = parse_time(raw.get("timestamp"))
    if at is None or at.tzinfo is None:
        raise MalformedSample(f"timestamp {str(raw.get('timestamp'))[:40]!r} is not a time with a zone")
    containers = raw.get("containers") or []
    if not isinstance(containers, list):
        raise MalformedSample("containers is not a list")
    if not containers:
        return None
    cpu = memory = 0.0
    for container in containers:
        usage = container.get("usage") if isinstance(container, Mapping) else None
        if not isinstance(usage, Mapping):
            raise MalformedSample("a container without a usage object")
        cpu += _quantity(usage, "cpu")
        memory += _quantity(usage, "memory")
    return PodUsage(cpu, memory, at)


@dataclass(frozen=True)
class PodMetricsList:
    """A PodMetricsList read: each pod's sample, the pods whose object was rejected and why, and a problem
    when the answer was no list at all."""

    samples: dict[str, PodUsage]
    rejected: dict[str, str]
    problem: str = ""


def read_pod_metrics(listing: Any) -> PodMetricsList:
    if not isinstance(listing, Mapping) or not isinstance(listing.get("items") or [], list):
        return PodMetricsList({}, {}, "the metrics API answered a malformed PodMetricsList")
    samples: dict[str, PodUsage] = {}
    rejected: dict[str, str] = {}
    for index, item in enumerate(listing.get("items") or []):
        metadata = item.get("metadata") if isinstance(item, Mapping) else None
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if not isinstance(name, str) or not name:
            rejected[f"items[{index}]"] = "no metadata.name"
            continue
        try:
            sample = pod_usage(item)
        except MalformedSample as error:
            rejected[name[:253]] = str(error)
            continue
        if sample is not None:
            samples[name] = sample
    return PodMetricsList(samples, rejected)


def fresh(sample: PodUsage | None, pod: PodView, spec: MetricsHealthSpec, now: datetime) -> bool:
    """Recent, and measured on this pod: a replacement of the same name starts without its predecessor's.
    A sample from further ahead than it may be old is no measurement of now either (a skewed metrics-server)."""
    if sample is None or abs((now - sample.at).total_seconds()) > spec.stale_after_seconds:
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


@dataclass(frozen=True)
class Breach:
    """A pod's breach, as status keeps it: when it began, moved on by every gap in the samples (so that
    `sampled_at - since` is the time samples showed it), and the newest sample of it."""

    since: datetime
    sampled_at: datetime


def breach_state(
    spec: MetricsHealthSpec, sample: PodUsage | None, previous: Breach | None, is_fresh: bool
) -> Breach | None:
    """The pod's breach after this sample; between the two thresholds and without a fresh sample it stays
    as it was. A gap between two samples longer than `staleAfterSeconds` is not counted (the count pauses):
    nobody saw the pod over its threshold then, so the first sample after an outage adds nothing."""
    if sample is None or not is_fresh:
        return previous
    if previous is None:
        return Breach(sample.at, sample.at) if _over(spec, sample) else None
    if not _over(spec, sample) and _recovered(spec, sample):
        return None
    gap = sample.at - previous.sampled_at
    if gap <= timedelta(0):
        return previous  # the same sample again, or an older one (two metrics-servers): nothing new
    unseen = gap if gap.total_seconds() > spec.stale_after_seconds else timedelta(0)
    return Breach(previous.since + unseen, sample.at)


@dataclass(frozen=True)
class MetricsVerdict:
    health: Health  # Degraded, or Failed once the pod is to be replaced
    reason: str
    since: datetime  # when the breach became sustained: a primary's failover delay counts from here
    detail: str = ""  # what is over which threshold for how long, without what is done about it


def metrics_verdict(
    spec: MetricsHealthSpec, sample: PodUsage | None, breach: Breach | None, is_fresh: bool
) -> MetricsVerdict | None:
    """Degraded once samples show the breach for `forSeconds`, Failed `replaceAfterSeconds` later; nothing
    on a stale or missing sample. Durations are measured between samples, not on the operator's clock."""
    if sample is None or breach is None or not is_fresh or not (over := _over(spec, sample)):
        return None
    lasted = (sample.at - breach.since).total_seconds()
    if lasted < spec.for_seconds:
        return None
    sustained = breach.since + timedelta(seconds=spec.for_seconds)
    detail = f"{', '.join(over)} for {lasted:.0f}s"
    if spec.replace_after_seconds and lasted >= spec.for_seconds + spec.replace_after_seconds:
        return MetricsVerdict(Health.FAILED, detail + ": replaced", sustained, detail)
    return MetricsVerdict(Health.DEGRADED, detail + ": drained", sustained, detail)
