"""The decision of one reconcile, scenario by scenario: observed state in, plan and status out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ftso import names
from ftso.reconcile import Plan, decide

from .factories import NOW, node, observed, pod, raw_spec


def _steady(term: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pods = [
        pod(0, role="primary", term=term, node_name="node-0"),
        pod(1, term=term, node_name="node-1"),
        pod(2, term=term, node_name="node-2"),
    ]
    plan = decide(observed(pods, status={"primary": "demo-0", "term": term}))
    return pods, plan.status


def _names(plan: Plan) -> dict[str, list[str]]:
    return {
        "creates": [p["metadata"]["name"] for p in plan.creates],
        "deletes": [d.name for d in plan.deletes],
        "patches": [p.name for p in plan.patches],
    }


def test_new_resource_creates_every_pod_and_the_services() -> None:
    plan = decide(observed([]))
    assert _names(plan)["creates"] == ["demo-0", "demo-1", "demo-2"]
    assert plan.applies == []
    assert sorted(a["metadata"]["name"] for a in plan.owned_creates) == [
        "demo",
        "demo",
        "demo-primary",
        "demo-replicas",
    ]
    assert plan.status["phase"] == "Pending"
    assert plan.status["primary"] == ""
    assert plan.write_status


def test_first_ready_pod_becomes_primary_with_term_1() -> None:
    pods = [pod(0, role="replica", serving=False, term=0), pod(1, phase="Pending", ready=False, term=0)]
    plan = decide(observed(pods))
    assert plan.status["primary"] == "demo-0"
    assert plan.status["term"] == 1
    assert any(e.reason == "BecamePrimary" for e in plan.events)
    patch = next(p for p in plan.patches if p.name == "demo-0")
    assert patch.labels == {names.LABEL_ROLE: "primary", names.LABEL_SERVING: "true"}
    assert patch.annotations == {names.ANNOTATION_TERM: "1"}


def test_steady_state_writes_nothing() -> None:
    pods, status = _steady()
    plan = decide(observed(pods, status=status, services=None))
    # Services are absent from this observation, so only they are applied.
    plan2 = decide(observed(pods, status=status, now=NOW + timedelta(minutes=5)))
    assert not plan.write_status and not plan.patches and not plan.deletes and not plan.creates
    assert not plan2.write_status
    assert status["phase"] == "Ready"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def _owned_with_selector(
    service: str, selector: dict[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The Services and PDB as the operator builds them, with one Service's selector set by someone else."""
    from ftso.api.spec import parse_spec
    from ftso.builders import Owner, build_pdb, build_services

    owner = Owner("demo", "ns", "uid-demo")
    spec = parse_spec(raw_spec())
    services = {s["metadata"]["name"]: s for s in build_services(spec, owner)}
    services[service] = {**services[service], "spec": {**services[service]["spec"], "selector": selector}}
    return services, build_pdb(spec, owner)


def test_a_changed_service_is_applied_back() -> None:
    pods, status = _steady()
    services, pdb = _owned_with_selector("demo-replicas", {})
    plan = decide(observed(pods, status=status, services=services, pdb=pdb))
    assert [a["metadata"]["name"] for a in plan.applies] == ["demo-replicas"]
    assert plan.owned_creates == []


def test_a_primary_service_from_before_loses_its_selector_and_its_controller_managed_slice() -> None:
    """<name>-primary once had a selector; the controller manager's slice for it must go, or it would keep
    routing to whichever pod it last saw."""
    pods, status = _steady()
    for ordinal, body in enumerate(pods):
        body["status"]["podIP"] = f"10.0.0.{ordinal + 1}"
    services, pdb = _owned_with_selector("demo-primary", {names.LABEL_ROLE: "primary"})
    theirs = {
        "metadata": {
            "name": "demo-primary-x7k2p",
            "labels": {
                names.LABEL_SLICE_SERVICE: "demo-primary",
                names.LABEL_SLICE_MANAGED_BY: "endpointslice-controller.k8s.io",
            },
        },
        "endpoints": [{"addresses": [pods[0]["status"]["podIP"]], "conditions": {"ready": True}}],
    }
    plan = decide(
        observed(
            pods,
            status=status,
            services=services,
            pdb=pdb,
            primary_slices={"demo-primary-x7k2p": theirs},
        )
    )
    assert [r.patch for r in plan.metadata_removals] == [{"spec": {"selector": None}}]
    assert [a["metadata"]["name"] for a in plan.applies] == ["demo-primary"]
    assert plan.owned_deletes == [("EndpointSlice", "demo-primary-x7k2p"), ("Endpoints", "demo-primary")]
    assert plan.routing is not None and plan.routing["endpoints"][0]["targetRef"]["name"] == status["primary"]


def test_deleted_replica_is_recreated() -> None:
    pods, status = _steady()
    plan = decide(observed([pods[0], pods[2]], status=status))
    assert _names(plan)["creates"] == ["demo-1"]
    assert plan.status["primary"] == "demo-0"


def test_failed_container_leaves_serving_then_pod_is_replaced() -> None:
    pods, status = _steady()
    pods[1] = pod(1, terminated=True, phase="Failed", node_name="node-1")
    plan = decide(observed(pods, status=status))
    assert _names(plan)["deletes"] == ["demo-1"]
    assert next(p for p in plan.patches if p.name == "demo-1").labels[names.LABEL_SERVING] == "false"
    assert {c["type"]: c["status"] for c in plan.status["conditions"]}["Degraded"] == "True"


def test_pod_on_notready_node_is_lost_and_force_deleted() -> None:
    pods, status = _steady()
    nodes = [node("node-0"), node("node-1", ready=False), node("node-2")]
    plan = decide(observed(pods, status=status, nodes=nodes))
    (delete,) = plan.deletes
    assert delete.name == "demo-1" and delete.force
    lost = next(p for p in plan.status["pods"] if p["name"] == "demo-1")
    assert lost["health"] == "Lost" and lost["node"] == "node-1"


def test_replacement_avoids_notready_nodes() -> None:
    pods, status = _steady()
    nodes = [node("node-0"), node("node-1", ready=False), node("node-2")]
    plan = decide(observed([pods[0], pods[2]], status=status, nodes=nodes))
    affinity = plan.creates[0]["spec"]["affinity"]["nodeAffinity"]
    values = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchFields"
    ][0]["values"]
    assert values == ["node-1"]


def test_scale_up_creates_new_ordinals() -> None:
    pods, status = _steady()
    plan = decide(observed(pods, spec=raw_spec(replicas=5), status=status))
    assert _names(plan)["creates"] == ["demo-3", "demo-4"]


def test_scale_down_deletes_highest_first_and_keeps_the_primary() -> None:
    pods = [pod(i, role="primary" if i == 3 else "replica") for i in range(5)]
    plan = decide(observed(pods, spec=raw_spec(replicas=2), status={"primary": "demo-3", "term": 1}))
    # The primary sits above the new size: the status hands its role over (written before any delete),
    # it is demoted, and only then does it go with the others, highest ordinal first.
    assert plan.status["primary"] == "demo-0"
    assert plan.status["term"] == 2
    assert _names(plan)["deletes"] == ["demo-4", "demo-3", "demo-2"]
    assert next(p for p in plan.patches if p.name == "demo-3").labels[names.LABEL_ROLE] == "replica"


def test_scale_down_never_deletes_a_primary_that_cannot_hand_over() -> None:
    pods = [pod(0, phase="Failed", terminated=True), pod(1, role="primary")]
    plan = decide(observed(pods, spec=raw_spec(replicas=1), status={"primary": "demo-1", "term": 1}))
    assert plan.status["primary"] == "demo-1"
    assert "demo-1" not in _names(plan)["deletes"]


def test_primary_gone_promotes_the_best_replica() -> None:
    pods, status = _steady()
    plan = decide(observed(pods[1:], status=status))
    assert plan.status["primary"] == "demo-1"
    assert plan.status["term"] == 2
    # Every pod learns the new term.
    assert all(p.annotations[names.ANNOTATION_TERM] == "2" for p in plan.patches)


def test_failed_primary_is_fenced_before_the_new_one_is_promoted() -> None:
    pods, status = _steady()
    pods[0] = pod(0, role="primary", terminated=True, phase="Failed", node_name="node-0")
    plan = decide(observed(pods, status=status))
    assert plan.status["primary"] == "demo-1"
    order = [p.name for p in plan.patches]
    assert order.index("demo-0") < order.index("demo-1")
    fenced = next(p for p in plan.patches if p.name == "demo-0")
    assert fenced.labels == {names.LABEL_ROLE: "fenced", names.LABEL_SERVING: "false"}
    assert "demo-0" in _names(plan)["deletes"]


def test_no_healthy_replica_leaves_no_primary() -> None:
    pods = [pod(0, role="primary", phase="Failed", terminated=True), pod(1, phase="Failed", terminated=True)]
    plan = decide(observed(pods, spec=raw_spec(replicas=2), status={"primary": "demo-0", "term": 3}))
    assert plan.status["primary"] == ""
    assert plan.status["term"] == 3
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["PrimaryUnavailable"]["status"] == "True"
    assert conditions["Available"]["status"] == "False"


def test_rollout_replaces_one_replica_at_a_time_primary_last() -> None:
    new = raw_spec()
    new["template"]["spec"]["containers"][0]["image"] = "demo:2"
    pods, status = _steady()
    plan = decide(observed(pods, spec=new, status=status))
    assert _names(plan)["deletes"] == ["demo-2"]
    assert plan.status["phase"] == "Updating"
    # While the replacement starts, nothing else is touched.
    starting = [pods[0], pods[1], pod(2, spec=new, phase="Pending", ready=False)]
    assert decide(observed(starting, spec=new, status=status)).deletes == []
    # Replicas done: the primary hands over to an updated replica, then goes.
    done = [pods[0], pod(1, spec=new, node_name="node-1"), pod(2, spec=new, node_name="node-2")]
    plan = decide(observed(done, spec=new, status=status))
    assert plan.status["primary"] == "demo-1" and plan.deletes == []
    after = [
        pod(0, role="replica", term=2),
        pod(1, spec=new, role="primary", term=2),
        pod(2, spec=new, term=2),
    ]
    plan = decide(observed(after, spec=new, status={**plan.status}))
    assert _names(plan)["deletes"] == ["demo-0"]


def test_rollout_takes_down_as_many_pods_as_max_unavailable_allows() -> None:
    old = raw_spec(replicas=5, disruption={"maxUnavailable": 2})
    new = raw_spec(replicas=5, disruption={"maxUnavailable": 2})
    new["template"]["spec"]["containers"][0]["image"] = "demo:2"
    pods = [
        pod(0, spec=old, role="primary"),
        *(pod(i, spec=old, node_name=f"node-{i % 3}") for i in range(1, 5)),
    ]
    status = {"primary": "demo-0", "term": 1}
    assert _names(decide(observed(pods, spec=new, status=status)))["deletes"] == ["demo-4", "demo-3"]
    # One replacement still starting: room for one more, not two.
    starting = [*pods[:4], pod(4, spec=new, phase="Pending", ready=False)]
    assert _names(decide(observed(starting, spec=new, status=status)))["deletes"] == ["demo-3"]
    # Two down: the rollout waits.
    two_starting = [*pods[:3], *(pod(i, spec=new, phase="Pending", ready=False) for i in (3, 4))]
    assert decide(observed(two_starting, spec=new, status=status)).deletes == []


def test_paused_takes_no_action() -> None:
    pods, status = _steady()
    plan = decide(observed(pods[1:], spec=raw_spec(paused=True), status=status))
    assert not plan.acts
    assert plan.status["phase"] == "Paused"
    assert plan.status["primary"] == "demo-0"


def test_invalid_spec_keeps_pods_and_reports() -> None:
    pods, status = _steady()
    spec = raw_spec()
    spec["template"]["metadata"]["labels"]["ftso.dev/role"] = "x"
    plan = decide(observed(pods, spec=spec, status=status))
    assert not plan.acts
    assert plan.status["phase"] == "Invalid"
    assert {c["type"]: c["status"] for c in plan.status["conditions"]}["InvalidSpec"] == "True"
    assert [e.reason for e in plan.events] == ["InvalidSpec"]
    # The warning is posted once, not on every reconcile.
    assert decide(observed(pods, spec=spec, status=plan.status)).events == []


def test_active_active_has_no_primary_and_every_healthy_pod_serves() -> None:
    pods = [pod(i, node_name=f"node-{i}", term=0) for i in range(3)]
    plan = decide(observed(pods, spec=raw_spec(mode="ActiveActive")))
    assert plan.status["primary"] == "" and plan.status["term"] == 0
    assert plan.status["servingReplicas"] == 3
    assert plan.status["phase"] == "Ready"
    assert "PrimaryUnavailable" not in {c["type"] for c in plan.status["conditions"]}


def test_unready_pod_asks_for_a_look_at_its_deadline() -> None:
    pods, status = _steady()
    pods[1] = pod(1, ready=False, ready_changed=NOW - timedelta(seconds=10), node_name="node-1")
    plan = decide(observed(pods, status=status))
    assert plan.requeue_after is not None and 19 < plan.requeue_after < 21
    assert next(p for p in plan.status["pods"] if p["name"] == "demo-1")["health"] == "Degraded"


def test_since_is_kept_while_health_holds() -> None:
    pods, status = _steady()
    later = decide(observed(pods, status=status, now=NOW + timedelta(hours=1)))
    assert later.status["pods"] == status["pods"]


def test_every_pod_learns_its_peers_addresses() -> None:
    pods, status = _steady()
    for i, body in enumerate(pods):
        body["status"]["podIP"] = f"10.0.0.{10 + i}"
    plan = decide(observed(pods, status=status))
    peers = {p.name: p.annotations.get(names.ANNOTATION_PEERS) for p in plan.patches}
    assert peers == {
        "demo-0": "10.0.0.11\n10.0.0.12",
        "demo-1": "10.0.0.10\n10.0.0.12",
        "demo-2": "10.0.0.10\n10.0.0.11",
    }
    # Once current, nothing more is written; a terminating pod leaves its peers' lists.
    for body in pods:
        body["metadata"]["annotations"][names.ANNOTATION_PEERS] = peers[body["metadata"]["name"]]
    assert not decide(observed(pods, status=status)).patches
    pods[2]["metadata"]["deletionTimestamp"] = pods[2]["metadata"]["creationTimestamp"]
    later = {
        p.name: p.annotations.get(names.ANNOTATION_PEERS)
        for p in decide(observed(pods, status=status)).patches
    }
    assert later["demo-0"] == "10.0.0.11" and later["demo-1"] == "10.0.0.10"
