"""The operator's judgement of a pod: table-driven over the signals the API gives."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ftso.api.spec import HealthSpec
from ftso.health import judge_pod
from ftso.model import NodeView, node_view, pod_view
from ftso.names import Health

from .factories import NOW, node, pod

NODES = {
    "node-0": node_view(node("node-0")),
    "node-bad": node_view(node("node-bad", ready=False)),
    "node-deleted": NodeView("node-deleted", ready=False, deleted_at=NOW - timedelta(seconds=21)),
    "node-just-deleted": NodeView("node-just-deleted", ready=False, deleted_at=NOW - timedelta(seconds=5)),
}


@pytest.mark.parametrize(
    ("kwargs", "health"),
    [
        ({}, Health.HEALTHY),
        ({"deleting": True}, Health.TERMINATING),
        ({"node_name": "node-bad"}, Health.LOST),
        ({"node_name": "node-unknown"}, Health.HEALTHY),  # not in the view yet: judged by its own state
        ({"node_name": "node-deleted"}, Health.LOST),
        ({"node_name": "node-just-deleted"}, Health.HEALTHY),  # its loss is not confirmed yet
        ({"phase": "Failed"}, Health.FAILED),
        ({"phase": "Succeeded"}, Health.FAILED),
        ({"terminated": True}, Health.FAILED),
        ({"phase": "Pending", "ready": False}, Health.STARTING),
        ({"ready": False, "ready_changed": NOW - timedelta(seconds=5)}, Health.DEGRADED),
        ({"ready": False, "ready_changed": NOW - timedelta(seconds=31)}, Health.FAILED),
    ],
)
def test_judge_pod(kwargs: dict[str, object], health: Health) -> None:
    assert judge_pod(pod_view(pod(0, **kwargs), "demo"), NODES, HealthSpec(), NOW).health == health  # type: ignore[arg-type]


def test_degraded_pod_has_a_deadline_at_the_unready_timeout() -> None:
    verdict = judge_pod(
        pod_view(pod(0, ready=False, ready_changed=NOW - timedelta(seconds=10)), "demo"),
        NODES,
        HealthSpec(),
        NOW,
    )
    assert verdict.deadline == NOW + timedelta(seconds=20)


def test_a_pod_that_never_became_ready_gets_the_startup_budget() -> None:
    started = NOW - timedelta(seconds=60)
    view = pod_view(pod(0, ready=False, started=started, ready_changed=started), "demo")
    verdict = judge_pod(view, NODES, HealthSpec(), NOW)
    assert verdict.health == Health.STARTING  # 2s x 30 + 30s budget = 90s
    assert judge_pod(view, NODES, HealthSpec(), NOW + timedelta(seconds=31)).health == Health.FAILED


def test_a_lost_node_wins_over_a_ready_pod() -> None:
    verdict = judge_pod(pod_view(pod(0, node_name="node-bad"), "demo"), NODES, HealthSpec(), NOW)
    assert verdict.gone and "NotReady" in verdict.reason
