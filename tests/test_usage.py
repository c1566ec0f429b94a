"""health.metrics: a sustained breach of a usage threshold drains, then replaces, a pod; a spike, a stale
sample or a missing metrics API changes nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from ftso import names
from ftso.api.spec import parse_spec
from ftso.client import ApiError
from ftso.controller import USAGE_REFRESH_SECONDS, UsageLookup
from ftso.model import format_time
from ftso.plan import Plan
from ftso.reconcile import Observed, decide
from ftso.usage import PodUsage, pod_usage

from .factories import NOW, observed, pod, raw_spec

METRICS = {"cpu": {"above": "800m", "recoverBelow": "500m"}, "forSeconds": 30, "replaceAfterSeconds": 60}


def _spec(**metrics: Any) -> dict[str, Any]:
    return raw_spec(health={"metrics": {**METRICS, **metrics}})


def _pods() -> list[dict[str, Any]]:
    return [pod(0, role="primary"), pod(1), pod(2)]


def _status(breach: dict[str, datetime] | None = None, health: str = "Healthy") -> dict[str, Any]:
    entries = []
    for i in range(3):
        entry = {"name": f"demo-{i}", "health": health if breach and f"demo-{i}" in breach else "Healthy"}
        if breach and f"demo-{i}" in breach:
            entry["breachSince"] = format_time(breach[f"demo-{i}"])
            # sampled all along: the last sample of the breach was the one before this
            entry["breachSampledAt"] = format_time(max(breach[f"demo-{i}"], NOW - timedelta(seconds=10)))
        entries.append(entry)
    return {"primary": "demo-0", "term": 1, "pods": entries}


def _decide(
    usage: dict[str, PodUsage],
    *,
    status: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    problem: str = "",
) -> Plan:
    seen = observed(_pods(), spec=spec or _spec(), status=status or _status())
    return decide(Observed(**{**seen.__dict__, "usage": usage, "metrics_problem": problem}))


def _entry(plan: Plan, name: str) -> dict[str, Any]:
    return next(dict(p) for p in plan.status["pods"] if p["name"] == name)


def _condition(plan: Plan) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == names.ConditionType.METRICS_AVAILABLE)


def _calm(at: datetime = NOW) -> dict[str, PodUsage]:
    return {f"demo-{i}": PodUsage(0.1, 50 * 2**20, at) for i in range(3)}


def test_a_sample_over_the_threshold_starts_a_breach_and_changes_nothing_else() -> None:
    plan = _decide({**_calm(), "demo-1": PodUsage(0.9, 0, NOW - timedelta(seconds=5))})
    entry = _entry(plan, "demo-1")
    assert entry["health"] == names.Health.HEALTHY and entry["serving"]
    assert entry["breachSince"] == format_time(NOW - timedelta(seconds=5))
    assert plan.deletes == [] and plan.events == []
    assert _condition(plan)["status"] == "True"


def test_a_breach_shown_for_the_duration_drains_the_pod_and_says_so_once() -> None:
    since = NOW - timedelta(seconds=40)
    plan = _decide({**_calm(), "demo-1": PodUsage(0.95, 0, NOW)}, status=_status({"demo-1": since}))
    entry = _entry(plan, "demo-1")
    assert entry["health"] == names.Health.DEGRADED and not entry["serving"]
    assert "cpu 950m above 800m for 40s" in entry["reason"]
    assert [e.reason for e in plan.events] == [names.EventReason.USAGE_BREACH]
    assert plan.deletes == []
    again = _decide(
        {**_calm(), "demo-1": PodUsage(0.95, 0, NOW)}, status=_status({"demo-1": since}, health="Degraded")
    )
    assert again.events == []


def test_a_breach_that_lasts_past_the_limit_replaces_the_pod() -> None:
    since = NOW - timedelta(seconds=95)
    plan = _decide({**_calm(), "demo-2": PodUsage(0.9, 0, NOW)}, status=_status({"demo-2": since}))
    assert _entry(plan, "demo-2")["health"] == names.Health.FAILED
    assert [d.name for d in plan.deletes] == ["demo-2"]


def test_a_spike_shorter_than_the_duration_ends_below_the_recovery_mark() -> None:
    since = NOW - timedelta(seconds=20)
    plan = _decide({**_calm(), "demo-1": PodUsage(0.4, 0, NOW)}, status=_status({"demo-1": since}))
    entry = _entry(plan, "demo-1")
    assert "breachSince" not in entry and entry["health"] == names.Health.HEALTHY


def test_between_the_two_marks_the_breach_neither_ends_nor_counts() -> None:
    since = NOW - timedelta(seconds=40)
    plan = _decide({**_calm(), "demo-1": PodUsage(0.6, 0, NOW)}, status=_status({"demo-1": since}))
    entry = _entry(plan, "demo-1")
    assert entry["breachSince"] == format_time(since)  # hysteresis: still in breach...
    assert entry["health"] == names.Health.HEALTHY  # ...but not over the threshold now: nothing is judged


def test_a_stale_sample_judges_nothing_and_the_condition_says_so() -> None:
    since = NOW - timedelta(seconds=200)
    old = NOW - timedelta(seconds=90)
    plan = _decide({**_calm(), "demo-1": PodUsage(0.95, 0, old)}, status=_status({"demo-1": since}))
    assert _entry(plan, "demo-1")["health"] == names.Health.HEALTHY and plan.deletes == []
    ready = _condition(plan)
    assert (ready["status"], ready["reason"]) == ("False", names.Reason.METRICS_STALE)
    assert "demo-1" in ready["message"]


def test_a_missing_metrics_api_judges_nothing_and_the_condition_says_why() -> None:
    since = NOW - timedelta(seconds=200)
    plan = _decide({}, status=_status({"demo-1": since}), problem="the metrics API is not served")
    assert all(p["health"] == names.Health.HEALTHY for p in plan.status["pods"])
    assert _condition(plan)["reason"] == names.Reason.METRICS_UNAVAILABLE


def test_a_primary_held_over_the_threshold_is_failed_over_from_after_the_failover_delay() -> None:
    since = NOW - timedelta(seconds=40)  # sustained 10 s ago, failover.delaySeconds is 5
    plan = _decide({**_calm(), "demo-0": PodUsage(0.95, 0, NOW)}, status=_status({"demo-0": since}))
    assert plan.status["primary"] != "demo-0" and plan.promotion == names.Promotion.FAILOVER
    assert "cpu 950m above 800m" in plan.status["failovers"][-1]["reason"]


def test_a_primary_just_in_breach_waits_for_the_failover_delay() -> None:
    since = NOW - timedelta(seconds=32)  # sustained 2 s ago
    plan = _decide({**_calm(), "demo-0": PodUsage(0.95, 0, NOW)}, status=_status({"demo-0": since}))
    assert plan.status["primary"] == "demo-0"
    assert plan.requeue_after is not None and plan.requeue_after <= 3.2


def test_a_replacements_breach_does_not_carry_over_from_its_predecessor() -> None:
    since = NOW - timedelta(days=1)  # before the pod was created
    plan = _decide({**_calm(), "demo-1": PodUsage(0.95, 0, NOW)}, status=_status({"demo-1": since}))
    assert _entry(plan, "demo-1")["breachSince"] == format_time(NOW)


def test_memory_thresholds_and_the_default_recovery_mark() -> None:
    spec = parse_spec(raw_spec(health={"metrics": {"memory": {"above": "1Gi"}}})).health.metrics
    assert spec is not None and spec.memory is not None and spec.cpu is None
    assert spec.memory.above == 2**30 and spec.memory.recover_below == 0.9 * 2**30
    assert parse_spec(raw_spec(health={"metrics": {"forSeconds": 5}})).health.metrics is None


def test_pod_metrics_sum_the_containers() -> None:
    raw = {
        "timestamp": "2026-11-26T12:00:00Z",
        "containers": [
            {"name": "a", "usage": {"cpu": "250000000n", "memory": "100Mi"}},
            {"name": "b", "usage": {"cpu": "50m", "memory": "28Mi"}},
        ],
    }
    sample = pod_usage(raw)
    assert sample is not None and abs(sample.cpu - 0.3) < 1e-9 and sample.memory == 128 * 2**20
    assert pod_usage({"timestamp": "2026-11-26T12:00:00Z", "containers": []}) is None


class FakeMetricsApi:
    def __init__(self) -> None:
        self.answer: dict[str, Any] | ApiError = {"items": []}
        self.reads = 0

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.reads += 1
        if isinstance(self.answer, ApiError):
            raise self.answer
        return self.answer


def test_usage_is_read_in_the_background_and_news_queues_the_resource() -> None:
    async def scenario() -> None:
        api = FakeMetricsApi()
        now = [0.0]
        lookup = UsageLookup(api, clock=lambda: now[0])  # type: ignore[arg-type]
        queued: list[tuple[str, str]] = []
        lookup.on_news = queued.append
        api.answer = {
            "items": [
                {
                    "metadata": {"name": "demo-0"},
                    "timestamp": "2026-11-26T12:00:00Z",
                    "containers": [{"usage": {"cpu": "1", "memory": "1Mi"}}],
                }
            ]
        }
        assert lookup.current(("ns", "demo")).samples == {}  # nothing yet; the read has started
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert set(lookup.current(("ns", "demo")).samples) == {"demo-0"} and queued == [("ns", "demo")]
        assert api.reads == 1  # not again before the refresh is due
        now[0] += USAGE_REFRESH_SECONDS
        api.answer = ApiError(404, "NotFound", "the server could not find the requested resource")
        lookup.current(("ns", "demo"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert "not served" in lookup.current(("ns", "demo")).problem and len(queued) == 2

    asyncio.run(scenario())
