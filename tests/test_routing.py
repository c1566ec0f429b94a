"""<name>-primary's EndpointSlice, written by the operator: it follows the primary's labels at once."""

from __future__ import annotations

from typing import Any

from ftso import names
from ftso.plan import Plan
from ftso.reconcile import decide

from .factories import NOW, observed, pod, raw_spec


def _pods(**primary: Any) -> list[dict[str, Any]]:
    pods = [
        pod(0, role="primary", node_name="node-0", **primary),
        pod(1, node_name="node-1"),
        pod(2, node_name="node-2"),
    ]
    for ordinal, body in enumerate(pods):
        body["status"]["podIP"] = f"10.0.0.{ordinal + 1}"
    return pods


def _routed_to(plan: Plan) -> list[str]:
    assert plan.routing is not None
    return [e["targetRef"]["name"] for e in plan.routing["endpoints"]]


def _steady_slice() -> dict[str, Any]:
    plan = decide(observed(_pods(), status={"primary": "demo-0", "term": 1}))
    assert _routed_to(plan) == ["demo-0"]
    assert plan.routing is not None
    return plan.routing


def test_the_first_primary_is_routed_and_a_routed_primary_writes_nothing_more() -> None:
    routing = _steady_slice()
    again = decide(
        observed(_pods(), status={"primary": "demo-0", "term": 1}, primary_slices={"demo-primary": routing})
    )
    assert again.routing is None and again.owned_deletes == []


def test_a_failover_routes_to_the_new_primary_in_the_reconcile_that_decides_it() -> None:
    routing = _steady_slice()
    pods = _pods(deleting=True)
    plan = decide(
        observed(pods, status={"primary": "demo-0", "term": 1}, primary_slices={"demo-primary": routing})
    )
    assert plan.status["primary"] != "demo-0" and plan.write_status
    assert _routed_to(plan) == [plan.status["primary"]]


def test_a_primary_that_stops_serving_leaves_the_slice_empty_until_the_failover() -> None:
    routing = _steady_slice()
    status = {"primary": "demo-0", "term": 1}
    just_unready = decide(
        observed(
            _pods(ready=False, ready_changed=NOW), status=status, primary_slices={"demo-primary": routing}
        )
    )
    assert just_unready.status["primary"] == "demo-0" and _routed_to(just_unready) == []
    long_unready = decide(
        observed(_pods(ready=False), status=status, primary_slices={"demo-primary": routing})
    )
    assert long_unready.status["primary"] == "demo-1" and _routed_to(long_unready) == ["demo-1"]


def test_no_slice_is_made_before_the_primary_has_an_address() -> None:
    pods = _pods()
    for body in pods:
        body["status"].pop("podIP")
    plan = decide(observed(pods, status={"primary": "demo-0", "term": 1}))
    assert plan.routing is None


def test_a_service_without_ports_or_a_primary_gets_no_slice() -> None:
    active = raw_spec(mode="ActiveActive")
    pods = [pod(i, role=names.ROLE_REPLICA) for i in range(3)]
    assert decide(observed(pods, spec=active, status={"term": 1})).routing is None


def test_paused_the_endpoint_still_follows_the_pods_but_the_ports_stay_as_they_were() -> None:
    routing = _steady_slice()
    renamed = {"ports": [{"name": "renamed", "port": 80, "targetPort": 9999}]}
    status = {"primary": "demo-0", "term": 1}
    acting = decide(
        observed(
            _pods(), spec=raw_spec(service=renamed), status=status, primary_slices={"demo-primary": routing}
        )
    )
    assert acting.routing is not None and acting.routing["ports"][0]["name"] == "renamed"
    paused = decide(
        observed(
            _pods(ready=False, ready_changed=NOW),
            spec=raw_spec(service=renamed, paused=True),
            status=status,
            primary_slices={"demo-primary": routing},
        )
    )
    assert _routed_to(paused) == []
    assert paused.routing is not None and paused.routing["ports"] == routing["ports"]
