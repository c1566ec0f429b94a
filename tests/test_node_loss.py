"""Node loss judged with doubt: a view where too much looks lost at once holds deletions and failovers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ftso import names
from ftso.reconcile import decide

from .factories import NOW, node, observed, pod, raw_spec


def _three() -> list[dict[str, Any]]:
    return [
        pod(0, role="primary", node_name="node-0"),
        pod(1, node_name="node-1"),
        pod(2, node_name="node-2"),
    ]


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_one_lost_node_of_three_is_acted_on() -> None:
    nodes = [node("node-0", ready=False), node("node-1"), node("node-2")]
    plan = decide(observed(_three(), status={"primary": "demo-0", "term": 1}, nodes=nodes))
    assert plan.status["primary"] == "demo-1"
    assert [d.name for d in plan.deletes] == ["demo-0"]
    assert _conditions(plan.status)["NodeLossSuspended"]["status"] == "False"


def test_most_nodes_lost_at_once_holds_every_deletion_and_failover() -> None:
    nodes = [node("node-0", ready=False), node("node-1", ready=False), node("node-2")]
    plan = decide(observed(_three(), status={"primary": "demo-0", "term": 1}, nodes=nodes))
    assert plan.status["primary"] == "demo-0" and plan.status["term"] == 1
    assert plan.deletes == []
    held = _conditions(plan.status)["NodeLossSuspended"]
    assert held["status"] == "True" and held["reason"] == "PartitionSuspected"
    assert "2 of 3 nodes" in held["message"]
    assert [e.reason for e in plan.events if e.reason.startswith("NodeLoss")] == ["NodeLossSuspended"]
    # Said once: the next reconcile in the same state posts no second Event.
    again = decide(observed(_three(), status=plan.status, nodes=nodes))
    assert not [e for e in again.events if e.reason.startswith("NodeLoss")]
    # Heartbeats back: normal service resumes, and says so.
    healed = decide(observed(_three(), status=plan.status))
    assert _conditions(healed.status)["NodeLossSuspended"]["status"] == "False"
    assert "NodeLossResumed" in [e.reason for e in healed.events]


def test_every_node_lost_holds_even_with_a_single_node() -> None:
    pods = [pod(0, role="primary", node_name="node-0")]
    plan = decide(
        observed(
            pods,
            spec=raw_spec(replicas=1),
            status={"primary": "demo-0", "term": 1},
            nodes=[node("node-0", ready=False)],
        )
    )
    assert plan.deletes == [] and plan.status["primary"] == "demo-0"


def test_share_is_configurable() -> None:
    nodes = [node("node-0", ready=False), node("node-1", ready=False), node("node-2")]
    obs = observed(_three(), status={"primary": "demo-0", "term": 1}, nodes=nodes)
    lenient = decide(obs.__class__(**{**obs.__dict__, "max_lost_node_share": 0.7}))
    assert lenient.status["primary"] == "demo-2"
    assert sorted(d.name for d in lenient.deletes) == ["demo-0", "demo-1"]


def test_a_silent_heartbeat_watch_holds_node_loss() -> None:
    nodes = [node("node-0", ready=False), node("node-1"), node("node-2")]
    obs = observed(_three(), status={"primary": "demo-0", "term": 1}, nodes=nodes)
    doubt = "no node heartbeat seen for 16s: the operator's heartbeat watch is in doubt, not the nodes"
    plan = decide(obs.__class__(**{**obs.__dict__, "node_view_in_doubt": doubt}))
    assert plan.deletes == [] and plan.status["primary"] == "demo-0"
    assert _conditions(plan.status)["NodeLossSuspended"]["reason"] == "HeartbeatsInDoubt"


def test_replacements_are_not_steered_away_from_nodes_while_node_loss_is_held() -> None:
    nodes = [node("node-0", ready=False), node("node-1", ready=False), node("node-2")]
    pods = _three()[:2]
    plan = decide(observed(pods, status={"primary": "demo-0", "term": 1}, nodes=nodes))
    (created,) = plan.creates
    assert "nodeAffinity" not in str(created["spec"].get("affinity") or {})


def test_fence_survives_a_reconcile_that_died_after_the_status_write() -> None:
    """The failover was written (demo-1 primary, term 2) but the labels never moved; demo-0 is Ready again."""
    first = decide(
        observed(
            _three(),
            status={"primary": "demo-0", "term": 1},
            nodes=[node("node-0", ready=False), node("node-1"), node("node-2")],
        )
    )
    record = first.status["failovers"][-1]
    assert record["fenceUid"] == "pod-uid-0" and "fencedAt" not in record
    # The crash: none of first's patches or deletes happened; the node comes back.
    later = decide(observed(_three(), status=first.status, now=NOW + timedelta(seconds=5)))
    patches = {p.name: p.labels for p in later.patches}
    assert (
        patches["demo-0"][names.LABEL_ROLE] == "fenced" and patches["demo-0"][names.LABEL_SERVING] == "false"
    )
    assert patches["demo-1"][names.LABEL_ROLE] == "primary"
    assert [d.name for d in later.deletes] == ["demo-0"]
    # Once the fenced pod is gone, the record says so, and a new pod of the same name is a normal replica.
    fresh = pod(0, node_name="node-0", term=2)
    fresh["metadata"]["uid"] = "pod-uid-0-new"
    done = decide(observed([fresh, *_three()[1:]], status=later.status))
    assert done.status["failovers"][-1]["fencedAt"]
    assert all(p.labels[names.LABEL_ROLE] != "fenced" for p in done.patches)
    assert done.deletes == []
