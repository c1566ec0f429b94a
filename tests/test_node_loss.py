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


def _heartbeats(phases: dict[str, float], silenced: set[str], silence_at: float, t: float) -> dict[str, Any]:
    """NodeViews at t seconds: each node renews every 10 s at its own phase; silenced nodes stop at silence_at."""
    from ftso.model import node_view

    views = {}
    for name, phase in phases.items():
        last = min(t, silence_at) if name in silenced else t
        renewed = phase + 10 * ((last - phase) // 10)
        views[name] = node_view(node(name), renewed=NOW + timedelta(seconds=renewed))
    return views


def _replay(phases: dict[str, float], silenced: set[str], spec_lost_after: int) -> list[tuple[float, str]]:
    """Every 0.25 s for 60 s after the silence: (t, what decide did) whenever it deleted or failed over."""
    from ftso.model import pod_view
    from ftso.reconcile import Observed

    nodes = sorted(phases)
    pods = [pod(i, role="primary" if i == 0 else "replica", node_name=nodes[i]) for i in range(3)]
    spec = raw_spec(failover={"nodeLostAfterSeconds": spec_lost_after})
    base = observed(pods, spec=spec, status={"primary": "demo-0", "term": 1})
    acted = []
    for step in range(240):
        t = 30 + step * 0.25
        views = _heartbeats(phases, silenced, 30.0, t)
        now = NOW + timedelta(seconds=t)
        plan = decide(Observed(base.fts, tuple(pod_view(p, "demo") for p in pods), views, {}, None, now))
        if plan.deletes or plan.status["primary"] != "demo-0":
            acted.append((t - 30, ",".join(sorted(d.name for d in plan.deletes))))
    return acted


def test_nodes_silenced_together_are_held_however_their_renewals_are_spread() -> None:
    """Three of four nodes go silent at once; their renewals are out of phase, so they cross any one age
    apart. Whatever the phases, no pod is deleted and nothing fails over, also with nodeLostAfterSeconds at
    its minimum: the loss is confirmed only once every node silenced with it has missed a renewal."""
    for phases in (
        {"n0": 0.1, "n1": 9.9, "n2": 5.0, "n3": 3.0},
        {"n0": 9.9, "n1": 0.1, "n2": 0.2, "n3": 7.0},
        {"n0": 4.0, "n1": 4.5, "n2": 9.8, "n3": 0.0},
    ):
        for lost_after in (11, 12, 20):
            assert _replay(phases, {"n0", "n1", "n2"}, lost_after) == [], (phases, lost_after)


def test_one_silent_node_is_acted_on_once_its_loss_is_confirmed() -> None:
    """One node of four silent: acted on once its heartbeat is two intervals plus slack old (24 s), or
    nodeLostAfterSeconds if that is longer, and not before."""
    phases = {"n0": 6.0, "n1": 9.9, "n2": 5.0, "n3": 0.1}
    for lost_after, expected in ((12, 24), (20, 24), (30, 30)):
        acted = _replay(phases, {"n0"}, lost_after)
        assert acted, lost_after
        first, deleted = acted[0]
        age_at_silence = 30 - (6.0 + 10 * ((30 - 6.0) // 10))  # n0 last renewed 4 s before the silence
        assert expected < first + age_at_silence <= expected + 0.25, (lost_after, acted[0])
        assert deleted == "demo-0"


def test_replacements_avoid_only_nodes_whose_loss_is_confirmed() -> None:
    """Three of four nodes past nodeLostAfterSeconds but not confirmed lost: no hold yet, so no node may be
    ruled out either (a pod required off most nodes could stay Pending)."""
    from ftso.model import node_view, pod_view
    from ftso.reconcile import Observed

    nodes = {
        f"n{i}": node_view(node(f"n{i}"), renewed=NOW - timedelta(seconds=21 if i < 3 else 1))
        for i in range(4)
    }
    pods = [pod(0, role="primary", node_name="n3"), pod(1, node_name="n3")]
    base = observed(pods, status={"primary": "demo-0", "term": 1})
    plan = decide(Observed(base.fts, tuple(pod_view(p, "demo") for p in pods), nodes, {}, None, NOW))
    assert plan.creates and plan.creates[0]["spec"].get("affinity") is None
