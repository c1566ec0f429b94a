"""The rules at their edges: a fenced primary never returns, the failover limit counts what it promises,
a suspect node's replica is promoted last, and a pod on an unreachable node is not taken for stopped."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ftso import kinds, names
from ftso.health import Verdict
from ftso.model import format_time, node_view, pod_view
from ftso.names import Health
from ftso.plan import Plan
from ftso.reconcile import Observed, decide, may_hold_data
from ftso.usage import PodUsage

from .factories import NOW, node, observed, pod, raw_spec

# Item 1: a fenced former primary is never elected again


def _fence_record(term: int = 2) -> dict[str, Any]:
    stamp = format_time(NOW - timedelta(minutes=5))
    return {
        "term": term,
        "kind": "Failover",
        "reason": "Failover: pod is gone",
        "from": "demo-0",
        "to": "demo-1",
        "detectedAt": stamp,
        "decidedAt": stamp,
        "fenceUid": "pod-uid-0",
    }


def test_a_pod_under_a_pending_fence_is_never_a_candidate() -> None:
    """The failover to demo-1 was written, the operator died before demo-0 was gone; demo-0 is Ready again
    (still labelled replica at term 1) and demo-1 dies: demo-0 is not promoted."""
    spec = raw_spec(replicas=2)
    status = {"primary": "demo-1", "term": 2, "failovers": [_fence_record()]}
    pods = [pod(0, spec=spec, term=1), pod(1, spec=spec, role="primary", term=2, terminated=True)]
    plan = decide(observed(pods, spec=spec, status=status))
    assert plan.status["primary"] != "demo-0" and plan.status["term"] == 2
    # Nor by a switchover, named or not.
    healthy = [pod(0, spec=spec, term=1), pod(1, spec=spec, role="primary", term=2)]
    for request in ("demo-0@a", "@b"):
        answer = decide(
            observed(healthy, spec=spec, status=status, annotations={names.ANNOTATION_SWITCHOVER: request})
        )
        assert answer.status["primary"] == "demo-1", request
        assert answer.status["switchover"]["result"] == "Refused", request


def test_a_pod_labelled_fenced_is_never_a_candidate() -> None:
    """The fence's record was pushed out of the history; the label still says fenced."""
    spec = raw_spec(replicas=2)
    pods = [
        pod(0, spec=spec, role="fenced", serving=False, term=2),
        pod(1, spec=spec, role="primary", term=2, terminated=True),
    ]
    plan = decide(observed(pods, spec=spec, status={"primary": "demo-1", "term": 2}))
    assert plan.status["primary"] == "" and plan.status["term"] == 2


# Item 5: failover.maxPerHour counts every failover of the hour, whatever the history's size


def _soft_failure_of(status: dict[str, Any], now: datetime) -> Observed:
    """The primary unready for 10 s (over the 5 s delay, under the 30 s timeout): a failover the limits hold.
    Every pod is new since the last term (the fenced one was replaced)."""
    term, primary = int(status.get("term") or 0), str(status.get("primary") or "")
    pods = [
        pod(
            i,
            role="primary" if f"demo-{i}" == primary else "replica",
            term=term,
            node_name=f"node-{i}",
            ready=f"demo-{i}" != primary,
            ready_changed=now - timedelta(seconds=10),
        )
        for i in range(3)
    ]
    for p in pods:
        p["metadata"]["uid"] += f"-{term}"
    return observed(pods, status=status, now=now)


def test_max_per_hour_counts_failovers_the_history_no_longer_holds() -> None:
    """Twelve failovers within the hour (the default maxPerHour), but status keeps ten records: the
    thirteenth soft failure waits."""
    status: dict[str, Any] = {"primary": "demo-0", "term": 1}
    for k in range(12):
        plan = decide(_soft_failure_of(status, NOW + timedelta(minutes=4 * k)))
        assert plan.status["term"] == status["term"] + 1, k
        status = dict(plan.status)
    assert len(status["failovers"]) == 10
    plan = decide(_soft_failure_of(status, NOW + timedelta(minutes=50)))
    assert plan.status["term"] == status["term"], "a thirteenth failover within the hour"
    failing = next(c for c in plan.status["conditions"] if c["type"] == "FailingOver")
    assert failing["reason"] == "Throttled" and "12 failovers in the last hour" in failing["message"]
    # An hour after the first, one may go again.
    later = decide(_soft_failure_of(status, NOW + timedelta(minutes=60, seconds=1)))
    assert later.status["term"] == status["term"] + 1


def test_switchovers_do_not_push_failovers_out_of_the_limit() -> None:
    spec = raw_spec(failover={"maxPerHour": 2})
    status: dict[str, Any] = {"primary": "demo-0", "term": 1}
    for k in range(2):
        plan = decide(_soft_failure_of(status, NOW + timedelta(minutes=k)))
        status = dict(plan.status)
    for k in range(10):  # ten switchovers, each pushing one record out
        healthy = [
            pod(i, role="primary" if f"demo-{i}" == status["primary"] else "replica", term=status["term"])
            for i in range(3)
        ]
        request = {names.ANNOTATION_SWITCHOVER: f"@n{k}"}
        plan = decide(observed(healthy, spec=spec, status=status, annotations=request))
        assert plan.status["term"] == status["term"] + 1
        status = dict(plan.status)
    assert all(r["kind"] == "Switchover" for r in status["failovers"])
    seen = _soft_failure_of(status, NOW + timedelta(minutes=5))
    plan = decide(
        Observed(**{**seen.__dict__, "fts": seen.fts.__class__(**{**seen.fts.__dict__, "spec": spec})})
    )
    assert plan.status["term"] == status["term"]


# Item 12: never one on a suspect node while one on a trusted node exists


def _with_nodes(seen: Observed, nodes: dict[str, Any]) -> Observed:
    return Observed(**{**seen.__dict__, "nodes": nodes})


def test_a_replica_on_a_silent_node_is_promoted_after_one_on_a_trusted_node() -> None:
    """demo-1's node missed its renewals (20 s: silent, not yet confirmed lost); demo-2's is fresh."""
    pods = [pod(1, node_name="node-1"), pod(2, node_name="node-2")]
    seen = observed(pods, status={"primary": "demo-0", "term": 1})
    nodes = {
        "node-0": node_view(node("node-0"), renewed=NOW - timedelta(seconds=1)),
        "node-1": node_view(node("node-1"), renewed=NOW - timedelta(seconds=20)),
        "node-2": node_view(node("node-2"), renewed=NOW - timedelta(seconds=1)),
    }
    plan = decide(_with_nodes(seen, nodes))
    assert plan.status["primary"] == "demo-2"
    # Only suspect candidates: the best of them is promoted rather than leaving the service without one.
    only = observed([pod(1, node_name="node-1")], status={"primary": "demo-0", "term": 1})
    assert decide(_with_nodes(only, nodes)).status["primary"] == "demo-1"


def test_during_a_partition_hold_candidates_on_trusted_nodes_come_first() -> None:
    """Three of four nodes silent (node loss held, their pods judged by their own state); the primary's
    container failed on the trusted node: its replica there is promoted, not demo-1 on a silent node."""
    pods = [
        pod(0, role="primary", node_name="n3", terminated=True),
        pod(1, node_name="n1"),
        pod(2, node_name="n3"),
    ]
    seen = observed(pods, status={"primary": "demo-0", "term": 1})
    nodes = {
        f"n{i}": node_view(node(f"n{i}"), renewed=NOW - timedelta(seconds=30 if i < 3 else 1))
        for i in range(4)
    }
    plan = decide(_with_nodes(seen, nodes))
    held = next(c for c in plan.status["conditions"] if c["type"] == "NodeLossSuspended")
    assert held["status"] == "True"
    assert plan.status["primary"] == "demo-2"


# Item 13: a pod on an unreachable node is not taken for stopped


def _tainted(name: str) -> dict[str, Any]:
    body = node(name, ready=False)
    body["spec"] = {
        "taints": [
            {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}
        ]
    }
    return body


def test_a_force_deleted_pod_on_an_unreachable_node_is_not_fenced_nor_its_name_reused() -> None:
    three = [
        pod(0, role="primary", node_name="node-0"),
        pod(1, node_name="node-1"),
        pod(2, node_name="node-2"),
    ]
    down = [node("node-0", ready=False), node("node-1"), node("node-2")]
    first = decide(observed(three, status={"primary": "demo-0", "term": 1}, nodes=down))
    assert first.status["primary"] == "demo-1" and [d.name for d in first.deletes] == ["demo-0"]
    # The force delete landed; node-0 is still unreachable: its process may still run.
    relabelled = [pod(1, role="primary", term=2, node_name="node-1"), pod(2, term=2, node_name="node-2")]
    later = decide(observed(relabelled, status=first.status, nodes=down, now=NOW + timedelta(seconds=5)))
    assert "fencedAt" not in later.status["failovers"][-1]
    assert later.creates == []
    waiting = next(c for c in later.status["conditions"] if c["type"] == "Progressing")
    assert "demo-0" in waiting["message"] and "node-0" in waiting["message"]
    # Kubernetes' non-graceful shutdown taint proves it stopped: the fence is done, the name free.
    tainted = [_tainted("node-0"), node("node-1"), node("node-2")]
    proven = decide(observed(relabelled, status=later.status, nodes=tainted, now=NOW + timedelta(seconds=9)))
    assert proven.status["failovers"][-1]["fencedAt"]
    assert [p["metadata"]["name"] for p in proven.creates] == ["demo-0"]
    # So does the node object's deletion.
    gone = decide(observed(relabelled, status=later.status, nodes=down[1:], now=NOW + timedelta(seconds=9)))
    assert gone.status["failovers"][-1]["fencedAt"] and gone.creates
    # And a node trusted again: its kubelet stops the containers of a pod the API no longer has.
    back = decide(observed(relabelled, status=later.status, now=NOW + timedelta(seconds=9)))
    assert back.status["unreachablePods"] == [] and back.creates


def test_pods_all_on_one_not_ready_node_are_kept_for_their_data() -> None:
    three = [pod(i, role="primary" if i == 0 else "replica", node_name="node-0") for i in range(3)]
    down = [node("node-0", ready=False), node("node-1"), node("node-2")]
    plan = decide(observed(three, status={"primary": "demo-0", "term": 1}, nodes=down))
    assert plan.deletes == [] and plan.status["primary"] == "demo-0" and plan.status["term"] == 1
    assert [e["name"] for e in plan.status["unreachablePods"]] == ["demo-0", "demo-1", "demo-2"]
    # Back: nothing was lost, nothing moved.
    healed = decide(observed(three, status=plan.status))
    assert healed.status["primary"] == "demo-0" and healed.deletes == [] and healed.status["term"] == 1


CHECKPOINT = {
    "intervalSeconds": 300,
    "template": {"name": "checkpoint", "image": "counter:dev", "args": ["checkpoint"]},
    "storage": {"persistentVolumeClaim": {"claimName": "ckpt"}},
    "restoreTemplate": {"name": "restore", "image": "counter:dev", "args": ["restore"]},
}


def _c7(primary: str, **extra: Any) -> dict[str, Any]:
    return {
        "primary": primary,
        "term": 3,
        "checkpoints": [{"id": "c7", "job": "j7", "result": "Succeeded", "finishedAt": format_time(NOW)}],
        "lastSuccessfulCheckpoint": "c7",
        "checkpointSchedule": {"lastScheduleTime": format_time(NOW)},
        **extra,
    }


def test_one_replica_on_a_not_ready_node_starts_no_recovery() -> None:
    spec = raw_spec(replicas=1, checkpoint=CHECKPOINT)
    down = [node("node-0", ready=False), node("node-1"), node("node-2")]
    only = [pod(0, spec=spec, role="primary", term=3, node_name="node-0")]
    plan = decide(observed(only, spec=spec, status=_c7("demo-0"), nodes=down))
    assert not plan.status.get("recovery"), "a recovery over data that may come back"
    # Nobody can take over: it stays primary (out of the Services while Lost), neither fenced nor deleted.
    assert plan.status["primary"] == "demo-0" and plan.deletes == []
    assert all(p.labels[names.LABEL_ROLE] == "primary" for p in plan.patches)
    # Its pod object gone too (someone force-deleted it): still no recovery, and no new demo-0.
    later = decide(observed([], spec=spec, status=plan.status, nodes=down))
    assert not later.status.get("recovery") and later.creates == []
    # The node proven gone: now the data is, and the recovery starts.
    proven = decide(observed([], spec=spec, status=later.status, nodes=down[1:]))
    assert proven.status["recovery"]["checkpoint"] == "c7"


def _decide_with_usage(pods: list[dict[str, Any]], spec: dict[str, Any], status: dict[str, Any]) -> Plan:
    seen = observed(pods, spec=spec, status=status)
    usage = {p["metadata"]["name"]: PodUsage(0.95, 0, NOW) for p in pods}
    return decide(Observed(**{**seen.__dict__, "usage": usage}))


def test_a_pod_failed_only_for_its_usage_still_holds_its_data() -> None:
    metrics = {"cpu": {"above": "800m"}, "forSeconds": 30, "replaceAfterSeconds": 60}
    spec = raw_spec(replicas=1, checkpoint=CHECKPOINT, health={"metrics": metrics})
    busy = [pod(0, spec=spec, role="primary", term=3)]
    since = format_time(NOW - timedelta(seconds=300))
    status = _c7("demo-0", pods=[{"name": "demo-0", "health": "Failed", "breachSince": since}])
    plan = _decide_with_usage(busy, spec, status)
    assert not plan.status.get("recovery"), "a busy pod judged empty"
    # The rule itself: Failed for its usage alone is busy, not empty; Failed for its own state is not.
    view = pod_view(busy[0], "demo")
    replaced = Verdict(Health.FAILED, "cpu 950m above 800m for 300s: replaced", breached_at=NOW)
    assert may_hold_data(view, replaced, unreachable_node=False)
    ended = pod_view(pod(0, spec=spec, phase="Failed", ready=False), "demo")
    assert not may_hold_data(ended, Verdict(Health.FAILED, "pod phase is Failed"), unreachable_node=False)


def test_a_pod_unready_too_long_whose_process_runs_still_holds_its_data() -> None:
    """The primary's readiness probe fails for longer than unreadyTimeoutSeconds, the replicas die: its
    container still runs, with the data, so no recovery from a checkpoint starts over it."""
    spec = raw_spec(checkpoint=CHECKPOINT)
    unready = pod(
        0, spec=spec, role="primary", term=3, ready=False, ready_changed=NOW - timedelta(seconds=60)
    )
    pods = [
        unready,
        pod(1, spec=spec, term=3, deleting=True),
        pod(2, spec=spec, term=3, ready=False, terminated=True),
    ]
    plan = decide(observed(pods, spec=spec, status=_c7("demo-0")))
    assert not plan.status.get("recovery"), "a recovery over a pod whose process runs with the data"
    # Nor does the operator throw the data away itself: nobody can take over, so it stays primary (out of the
    # Services while unready), neither fenced nor deleted, as a primary on an unreachable node does.
    assert plan.status["primary"] == "demo-0" and "demo-0" not in [d.name for d in plan.deletes]
    # The rule itself: Failed for its readiness alone (running, Ready once) holds the data; a pod whose
    # container failed, or one never Ready, does not.
    timed_out = Verdict(Health.FAILED, "pod not Ready for over 30s")
    assert may_hold_data(pod_view(unready, "demo"), timed_out, unreachable_node=False)
    crashed = pod_view(pods[2], "demo")
    assert not may_hold_data(
        crashed, Verdict(Health.FAILED, crashed.container_failure), unreachable_node=False
    )
    fresh = pod_view(pod(0, spec=spec, ready=False, ready_changed=NOW - timedelta(minutes=10)), "demo")
    assert not may_hold_data(fresh, Verdict(Health.FAILED, "pod never became Ready"), unreachable_node=False)


def test_a_node_tainted_out_of_service_is_news_for_its_resources(tmp_path: Path) -> None:
    """The taint is the proof a held name waits for: the store keeps it and the resource is looked at."""
    from .test_event_routing import KEY, _runtime

    runtime, adds = _runtime(tmp_path, {"primary": "demo-1", "term": 2})
    runtime.node_changed("ADDED", node("node-0", ready=False))
    runtime.owned_changed(kinds.POD, "ADDED", pod(1, node_name="node-0"))
    adds.seen.clear()
    runtime.node_changed("MODIFIED", {**_tainted("node-0"), "kind": "Node"})
    assert adds.seen == [(KEY, True)]
    assert node_view(runtime.store.nodes["node-0"]).out_of_service


def test_hostile_failover_times_and_unreachable_pods_in_status_are_ignored() -> None:
    for times, entries in (
        ("garbage", "garbage"),
        ([1, None, "not a time", {"a": 1}], [{"name": 5}, "x", {"name": "demo-0", "uid": "", "node": "n"}]),
        ({"a": "b"}, {"name": "demo-0"}),
    ):
        status = {"primary": "demo-0", "term": 1, "failoverTimes": times, "unreachablePods": entries}
        plan = decide(observed([pod(0, role="primary"), pod(1), pod(2)], status=status))
        assert plan.status["failoverTimes"] == [] and plan.status["unreachablePods"] == []


def test_a_primary_unready_past_its_timeout_is_still_a_soft_failure_under_the_limits() -> None:
    """Unready for longer than unreadyTimeoutSeconds is still only unready: the process runs and may come
    back, so a throttled failover keeps waiting (it is no hard failure), and the primary is not deleted."""
    spec = raw_spec(failover={"maxPerHour": 1, "minIntervalSeconds": 0})
    records = [
        {"term": 2, "kind": "Failover", "reason": "Failover", "from": "demo-1", "to": "demo-0"}
        | {
            "detectedAt": format_time(NOW - timedelta(minutes=20)),
            "decidedAt": format_time(NOW - timedelta(minutes=20)),
        }
    ]
    status = {"primary": "demo-0", "term": 2, "failovers": records}
    unready = [
        pod(0, role="primary", term=2, ready=False, ready_changed=NOW - timedelta(seconds=45)),
        pod(1, term=2, node_name="node-1"),
        pod(2, term=2, node_name="node-2"),
    ]
    plan = decide(observed(unready, spec=spec, status=status))
    assert (plan.status["primary"], plan.status["term"]) == ("demo-0", 2), (
        "a soft failure waits for the limits"
    )
    failing = next(c for c in plan.status["conditions"] if c["type"] == "FailingOver")
    assert failing["reason"] == "Throttled"
    assert [d.name for d in plan.deletes] == [], "the throttled primary is not deleted meanwhile"
    # Gone for good (its container terminated): now the limits no longer hold it.
    crashed = [pod(0, role="primary", term=2, terminated=True), *unready[1:]]
    assert decide(observed(crashed, spec=spec, status=status)).status["term"] == 3
