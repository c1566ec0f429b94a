"""health.metrics at the edges: a load spike on every pod never empties the service, `replaceAfterSeconds: 0`
never deletes, a gap in the samples never counts toward a breach, and hostile PodMetrics are a condition."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from ftso import names
from ftso.controller import USAGE_REFRESH_SECONDS, UsageLookup
from ftso.model import format_time
from ftso.plan import Plan
from ftso.reconcile import Observed, decide
from ftso.usage import PodUsage

from .factories import NOW, observed, pod, raw_spec
from .test_usage import FakeMetricsApi

METRICS = {"cpu": {"above": "800m", "recoverBelow": "500m"}, "forSeconds": 30, "replaceAfterSeconds": 60}


def _spec(replicas: int = 3, **metrics: Any) -> dict[str, Any]:
    return raw_spec(replicas=replicas, health={"metrics": {**METRICS, **metrics}})


def _status(
    breaches: dict[str, tuple[datetime, datetime]],
    *,
    replicas: int = 3,
    health: dict[str, str] | None = None,
    failovers: list[dict[str, Any]] | None = None,
    primary: str = "demo-0",
) -> dict[str, Any]:
    """Each breach as (breachSince, breachSampledAt): the first and the last sample of it seen."""
    entries = []
    for i in range(replicas):
        name = f"demo-{i}"
        entry: dict[str, Any] = {"name": name, "health": (health or {}).get(name, "Healthy")}
        if name in breaches:
            entry["breachSince"] = format_time(breaches[name][0])
            entry["breachSampledAt"] = format_time(breaches[name][1])
        entries.append(entry)
    return {"primary": primary, "term": 1, "pods": entries, "failovers": failovers or []}


def _decide(
    pods: list[dict[str, Any]], usage: dict[str, PodUsage], status: dict[str, Any], spec: dict[str, Any]
) -> Plan:
    seen = observed(pods, spec=spec, status=status)
    return decide(Observed(**{**seen.__dict__, "usage": usage}))


def _entry(plan: Plan, name: str) -> dict[str, Any]:
    return next(dict(p) for p in plan.status["pods"] if p["name"] == name)


def _condition(plan: Plan, kind: str) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == kind)


def _hot(names_: list[str], cpu: float = 0.95) -> dict[str, PodUsage]:
    return {n: PodUsage(cpu, 0, NOW) for n in names_}


LONG = (NOW - timedelta(seconds=500), NOW - timedelta(seconds=10))  # in breach for long, sampled throughout


# Item 3: a load spike on every pod


def test_a_load_spike_on_every_pod_drains_and_replaces_no_more_than_max_unavailable() -> None:
    pods = [pod(0, role="primary"), pod(1), pod(2)]
    every = ["demo-0", "demo-1", "demo-2"]
    plan = _decide(pods, _hot(every), _status(dict.fromkeys(every, LONG)), _spec())
    assert plan.status["servingReplicas"] >= 2, [
        (p["name"], p["health"], p["reason"]) for p in plan.status["pods"]
    ]
    assert len(plan.deletes) <= 1
    assert plan.status["primary"] == "demo-0" and _entry(plan, "demo-0")["serving"]
    kept = [p for p in plan.status["pods"] if p["serving"]]
    assert all("kept serving" in p["reason"] for p in kept)
    assert names.EventReason.USAGE_DRAIN_LIMITED in [e.reason for e in plan.events]
    assert names.EventReason.RECOVERY_STARTED not in [e.reason for e in plan.events]
    # Said once: the next reconcile, with nothing new, posts no second Event.
    again = _decide(pods, _hot(every), dict(plan.status), _spec())
    assert names.EventReason.USAGE_DRAIN_LIMITED not in [e.reason for e in again.events]


def test_usage_never_drains_the_last_serving_pod() -> None:
    plan = _decide(
        [pod(0, role="primary")], _hot(["demo-0"]), _status({"demo-0": LONG}, replicas=1), _spec(1)
    )
    assert _entry(plan, "demo-0")["serving"] and plan.deletes == []
    assert _condition(plan, names.ConditionType.AVAILABLE)["status"] == "True"


def test_usage_drains_nothing_while_another_pod_is_already_down() -> None:
    starting = pod(
        1, ready=False, started=NOW - timedelta(seconds=5), ready_changed=NOW - timedelta(seconds=5)
    )
    plan = _decide(
        [pod(0, role="primary"), starting, pod(2)], _hot(["demo-2"]), _status({"demo-2": LONG}), _spec()
    )
    assert _entry(plan, "demo-2")["serving"] and plan.deletes == []


def test_a_primary_that_carries_the_load_is_not_failed_over_again_within_the_limits() -> None:
    # demo-1 took over from demo-0 for its load 5 s ago (failover.minIntervalSeconds is 10); the load came along.
    record = {
        "term": 2,
        "kind": "Failover",
        "reason": "Failover: cpu 950m above 800m",
        "from": "demo-0",
        "to": "demo-1",
        "detectedAt": format_time(NOW - timedelta(seconds=6)),
        "decidedAt": format_time(NOW - timedelta(seconds=5)),
        "routedAt": format_time(NOW - timedelta(seconds=4)),
    }
    pods = [pod(0, term=2), pod(1, role="primary", term=2), pod(2, term=2)]
    status = {**_status({"demo-1": LONG}, failovers=[record], primary="demo-1"), "term": 2}
    plan = _decide(pods, _hot(["demo-1"]), status, _spec())
    assert plan.status["primary"] == "demo-1" and plan.promotion == ""
    assert plan.deletes == [] and _entry(plan, "demo-1")["serving"]


# Item 4: replaceAfterSeconds 0


def test_replace_after_zero_fails_over_from_a_hot_primary_without_deleting_it() -> None:
    pods = [pod(0, role="primary"), pod(1), pod(2)]
    plan = _decide(pods, _hot(["demo-0"]), _status({"demo-0": LONG}), _spec(replaceAfterSeconds=0))
    assert plan.status["primary"] != "demo-0" and plan.promotion == names.Promotion.FAILOVER
    assert plan.deletes == []
    old = next(p for p in plan.patches if p.name == "demo-0")
    assert old.labels[names.LABEL_ROLE] == names.ROLE_REPLICA and old.labels[names.LABEL_SERVING] == "false"
    assert "fenceUid" not in plan.status["failovers"][-1]
    # The next reconcile, with the labels written: still no deletion, however long the breach lasts.
    new = plan.status["primary"]
    later = [
        pod(0, term=2, serving=False),
        *(pod(i, role="primary" if f"demo-{i}" == new else "replica", term=2) for i in (1, 2)),
    ]
    again = _decide(later, _hot(["demo-0"]), dict(plan.status), _spec(replaceAfterSeconds=0))
    assert again.deletes == [] and _entry(again, "demo-0")["role"] == names.ROLE_REPLICA


# Item 7: a breach counts only time covered by fresh samples


def test_one_sample_after_a_metrics_outage_does_not_replace_a_pod() -> None:
    # Seen in breach from 320 s to 300 s ago; metrics-server was down since; this sample is the first after.
    pods = [pod(0, role="primary"), pod(1), pod(2)]
    breach = {"demo-1": (NOW - timedelta(seconds=320), NOW - timedelta(seconds=300))}
    plan = _decide(pods, _hot(["demo-1"]), _status(breach), _spec())
    assert plan.deletes == []
    entry = _entry(plan, "demo-1")
    assert entry["health"] == names.Health.HEALTHY and entry["serving"]
    # The gap is not counted: the breach has lasted 20 s of samples, and this is its newest sample.
    assert entry["breachSince"] == format_time(NOW - timedelta(seconds=20))
    assert entry["breachSampledAt"] == format_time(NOW)


def test_samples_a_gap_apart_no_longer_than_stale_after_count_in_full() -> None:
    pods = [pod(0, role="primary"), pod(1), pod(2)]
    breach = {"demo-1": (NOW - timedelta(seconds=100), NOW - timedelta(seconds=55))}  # staleAfter is 60
    plan = _decide(pods, _hot(["demo-1"]), _status(breach), _spec())
    assert [d.name for d in plan.deletes] == ["demo-1"]  # 100 s of samples: past forSeconds + replaceAfter
    assert _entry(plan, "demo-1")["breachSince"] == format_time(NOW - timedelta(seconds=100))


# Item 11: hostile aggregated-API data


def _item(name: str, **fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "timestamp": "2026-11-26T12:00:00Z", **fields}


def _read(api: FakeMetricsApi, lookup: UsageLookup) -> Any:
    async def scenario() -> Any:
        lookup.current(("ns", "demo"))
        for _ in range(3):
            await asyncio.sleep(0)
        return lookup.current(("ns", "demo"))

    return asyncio.run(scenario())


def test_a_pod_metrics_timestamp_without_a_zone_is_a_condition_not_a_crash() -> None:
    api = FakeMetricsApi()
    api.answer = {
        "items": [
            _item("demo-0", containers=[{"usage": {"cpu": "100m", "memory": "10Mi"}}]),
            _item(
                "demo-1",
                timestamp="2026-11-26T12:00:00",
                containers=[{"usage": {"cpu": "1", "memory": "1Mi"}}],
            ),
        ]
    }
    reading = _read(api, UsageLookup(api))  # type: ignore[arg-type]
    seen = observed([pod(0, role="primary"), pod(1), pod(2)], spec=_spec(), status=_status({}))
    assert decide(Observed(**{**seen.__dict__, "usage": reading.samples})).deletes == []  # no crash
    plan = decide(
        Observed(**{**seen.__dict__, "usage": reading.samples, "metrics_rejected": reading.rejected})
    )
    available = _condition(plan, names.ConditionType.METRICS_AVAILABLE)
    assert (available["status"], available["reason"]) == ("False", names.Reason.METRICS_MALFORMED)
    assert "demo-1" in available["message"] and "zone" in available["message"]
    assert set(reading.samples) == {"demo-0"}


def test_malformed_pod_metrics_are_ignored_and_reported_and_the_reader_survives() -> None:
    api = FakeMetricsApi()
    good = [{"usage": {"cpu": "100m", "memory": "10Mi"}}]
    api.answer = {
        "items": [
            _item("demo-0", containers=good),
            _item("demo-1", containers=5),
            _item("demo-2", containers=["x"]),
            _item("demo-3", containers=[{"usage": [1, 2]}]),
            _item("demo-4", containers=[{"usage": {"cpu": 5, "memory": "1Mi"}}]),
            _item("demo-5", containers=[{"usage": {"cpu": "lots", "memory": "1Mi"}}]),
            _item("demo-6", containers=[{"usage": {"cpu": "9" * 400, "memory": "1Mi"}}]),
            "not an object",
        ]
    }
    now = [0.0]
    lookup = UsageLookup(api, clock=lambda: now[0])  # type: ignore[arg-type]
    reading = _read(api, lookup)
    assert set(reading.samples) == {"demo-0"}
    assert {f"demo-{i}" for i in range(1, 7)} <= set(reading.rejected)
    # The reader lives on: the next read is made and taken.
    api.answer = {"items": [_item("demo-1", containers=good)]}
    now[0] += USAGE_REFRESH_SECONDS
    again = _read(api, lookup)
    assert set(again.samples) == {"demo-1"} and again.rejected == {}
    # A listing that is not one at all is a problem, said as such.
    api.answer = ["not", "a", "listing"]  # type: ignore[assignment]
    now[0] += USAGE_REFRESH_SECONDS
    assert "malformed" in _read(api, lookup).problem


def test_a_breach_in_status_without_a_zone_is_ignored_not_a_crash() -> None:
    status = _status({})
    status["pods"][1] = {"name": "demo-1", "health": "Healthy", "breachSince": "2026-11-26T11:00:00"}
    plan = _decide([pod(0, role="primary"), pod(1), pod(2)], _hot(["demo-1"]), status, _spec())
    assert _entry(plan, "demo-1")["breachSince"] == format_time(NOW) and plan.deletes == []
