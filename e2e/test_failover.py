"""Failover, switchover and fencing on the real control plane, with the safety invariant recorded over
every pod and status change the API server reported during each test."""

from __future__ import annotations

import time
from typing import Any

import pytest

from e2e.faults import (
    fail_container,
    force_delete_pod,
    make_node_not_ready,
    make_node_ready,
    make_pod_unready,
    stop_heartbeat,
    taint_out_of_service,
)
from e2e.fts import Fts, manifest
from e2e.invariants import invariant_watch
from e2e.kube import Kube, condition, ftso_cli, pod_ready, wait_for
from e2e.operator_process import OperatorPair, OperatorProcess
from e2e.recorder import WatchRecorder

FAST = {
    "failover": {"delaySeconds": 2, "nodeLostAfterSeconds": 12, "minIntervalSeconds": 0, "maxPerHour": 100}
}


def _ready(kube: Kube, namespace: str, **spec: Any) -> tuple[Fts, dict[str, Any]]:
    fts = Fts(kube, namespace)
    fts.create(manifest(**{**FAST, **spec}))
    status = fts.wait_ready()
    wait_for(fts.primary_routed_exactly, what="the first primary routed")
    return fts, status


def _new_primary_routed(fts: Fts, old: str, term: int, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = fts.status()
        if (
            status.get("primary") not in ("", old)
            and status.get("term", 0) > term
            and fts.primary_routed_exactly()
        ):
            return status
        return None

    return wait_for(
        done,
        timeout=timeout,
        what=f"a new primary instead of {old}, routed (status {fts.status().get('primary')})",
    )


def test_primary_force_deleted(kube: Kube, namespace: str, ha_operator: OperatorPair) -> None:
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        force_delete_pod(kube, namespace, status["primary"])
        new = _new_primary_routed(fts, status["primary"], status["term"])
        assert new["term"] == status["term"] + 1
        record = new["failovers"][-1]
        assert record["kind"] == "Failover" and record["from"] == status["primary"]
        wait_for(lambda: fts.status()["failovers"][-1].get("routedAt"), what="routedAt recorded")
        fts.wait_ready()
    fts.wait_event("FailoverStarted")
    fts.wait_event("FailoverCompleted")


def test_primary_container_failed(kube: Kube, namespace: str, ha_operator: OperatorPair) -> None:
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        fail_container(kube, namespace, status["primary"])
        _new_primary_routed(fts, status["primary"], status["term"])
        fts.wait_ready()


def test_primary_unready_past_the_delay(kube: Kube, namespace: str, ha_operator: OperatorPair) -> None:
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace, failover={**FAST["failover"], "delaySeconds": 3})
        make_pod_unready(kube, namespace, status["primary"])
        started = time.monotonic()
        _new_primary_routed(fts, status["primary"], status["term"])
        # Condition times have one-second resolution, so the wait is the delay minus up to a second.
        assert time.monotonic() - started >= 2, "the failover waited for failover.delaySeconds"
        fts.wait_ready()


def _first_seen(recorder: WatchRecorder, predicate: Any) -> float | None:
    return next((s.at for s in recorder.snapshot() if predicate(s.object)), None)


def test_primary_node_not_ready_fails_over_before_kubernetes_marks_the_pod(
    kube: Kube, namespace: str, ha_operator: OperatorPair, healthy_nodes: None
) -> None:
    with invariant_watch(kube, namespace) as (pods, resources):
        fts, status = _ready(kube, namespace)
        old = status["primary"]
        old_uid = fts.pod(old)["metadata"]["uid"]  # type: ignore[index]
        node = fts.pod(old)["spec"]["nodeName"]  # type: ignore[index]
        make_node_not_ready(kube, node)
        _new_primary_routed(fts, old, status["term"])
        make_node_ready(kube, node)  # the old primary's name waits until its node is back or proven stopped
        fts.wait_ready()
    promoted_at = _first_seen(resources, lambda o: (o.get("status") or {}).get("term", 0) > status["term"])
    old_unready_by_kubernetes = _first_seen(
        pods,
        lambda o: (
            o["metadata"]["uid"] == old_uid
            and o["metadata"]["labels"].get("ftso.dev/role") == "primary"
            and condition(o, "Ready") == "False"
        ),
    )
    assert promoted_at is not None
    assert old_unready_by_kubernetes is None or promoted_at < old_unready_by_kubernetes


def test_primary_node_heartbeat_stopped(
    kube: Kube, namespace: str, ha_operator: OperatorPair, healthy_nodes: None
) -> None:
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        node = fts.pod(status["primary"])["spec"]["nodeName"]  # type: ignore[index]
        stop_heartbeat(kube, node)
        started = time.monotonic()
        new = _new_primary_routed(fts, status["primary"], status["term"], timeout=50)
        elapsed = time.monotonic() - started
        # Confirmed at max(nodeLostAfterSeconds (12 s), 24 s): two heartbeats plus slack.
        assert elapsed < 24 + 5, f"failover took {elapsed:.1f}s, expected about 24 s"
        # Kubernetes has not noticed yet: its grace period is 50 s.
        assert condition(kube.get(f"/api/v1/nodes/{node}"), "Ready") == "True"
        assert "heartbeat" in new["failovers"][-1]["reason"]
        # The old primary's process may still run on the silent node: its name waits for proof it stopped.
        taint_out_of_service(kube, node)
        wait_for(
            lambda: (
                all(pod_ready(p) and p["spec"]["nodeName"] != node for p in fts.live_pods())
                and len(fts.live_pods()) == 3
            ),
            timeout=60,
            what=f"every pod Ready off {node}",
        )


def test_switchover_to_a_named_pod_and_to_any(kube: Kube, namespace: str, ha_operator: OperatorPair) -> None:
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        target = next(
            p["metadata"]["name"] for p in fts.live_pods() if p["metadata"]["name"] != status["primary"]
        )
        result = ftso_cli(kube, "switchover", "svc", "-n", namespace, "--to", target)
        assert result.returncode == 0, result.stderr
        assert fts.status()["primary"] == target and fts.status()["term"] == status["term"] + 1
        assert fts.primary_routed_exactly() == target
        old = fts.pod(status["primary"])
        assert old is not None and old["metadata"]["labels"]["ftso.dev/role"] == "replica", (
            "old primary kept as replica"
        )
        result = ftso_cli(kube, "switchover", "svc", "-n", namespace)
        assert result.returncode == 0, result.stderr
        assert fts.status()["primary"] != target and fts.status()["term"] == status["term"] + 2
        wait_for(fts.primary_routed_exactly, what="routed after the second switchover")
    fts.wait_event("SwitchoverCompleted")


def test_switchover_to_an_unhealthy_pod_is_refused(
    kube: Kube, namespace: str, ha_operator: OperatorPair
) -> None:
    fts, status = _ready(kube, namespace, health={"unreadyTimeoutSeconds": 120})
    target = next(
        p["metadata"]["name"] for p in fts.live_pods() if p["metadata"]["name"] != status["primary"]
    )
    make_pod_unready(kube, namespace, target)
    wait_for(
        lambda: any(
            p["name"] == target and p["health"] in ("Degraded", "Starting") for p in fts.status()["pods"]
        ),
        what=f"{target} judged not healthy",
    )
    result = ftso_cli(kube, "switchover", "svc", "-n", namespace, "--to", target)
    assert result.returncode == 1
    assert "not a healthy replica" in result.stderr
    assert fts.status()["primary"] == status["primary"] and fts.status()["term"] == status["term"]
    fts.wait_event("SwitchoverRefused")


def test_switchover_through_the_annotation_gitops_style(
    kube: Kube, namespace: str, ha_operator: OperatorPair
) -> None:
    fts, status = _ready(kube, namespace)
    kube.patch(fts.path, {"metadata": {"annotations": {"ftso.dev/switchover": "@change-42"}}})
    _new_primary_routed(fts, status["primary"], status["term"])
    assert fts.status()["switchover"]["request"] == "@change-42"


def test_operator_killed_mid_failover(kube: Kube, namespace: str, ha_operator: OperatorPair) -> None:
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        ha_operator.kill()
        force_delete_pod(kube, namespace, status["primary"])
        time.sleep(1)
        ha_operator.start()
        _new_primary_routed(fts, status["primary"], status["term"])
        fts.wait_ready()
        assert fts.status()["term"] == status["term"] + 1


def test_two_operators_racing(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    second = OperatorProcess(
        kube.kubeconfig, operator.log_path.with_suffix(".second.log"), namespaces=(namespace,)
    )
    second.start()
    try:
        with invariant_watch(kube, namespace):
            fts, status = _ready(kube, namespace)
            for _ in range(3):
                force_delete_pod(kube, namespace, status["primary"])
                status = _new_primary_routed(fts, status["primary"], status["term"])
                status = fts.wait_ready()
        assert status["term"] == 4, f"each failover raised the term by exactly one: {status['failovers']}"
    finally:
        second.stop()


def test_flapping_primary_is_rate_limited(kube: Kube, namespace: str, ha_operator: OperatorPair) -> None:
    fts = Fts(kube, namespace)
    fts.create(
        manifest(
            failover={"delaySeconds": 1, "nodeLostAfterSeconds": 12, "minIntervalSeconds": 0, "maxPerHour": 1}
        )
    )
    status = fts.wait_ready()
    force_delete_pod(kube, namespace, status["primary"])
    status = _new_primary_routed(fts, status["primary"], status["term"])
    fts.wait_ready()
    # A soft failure (unready past the delay) is what anti-flapping is for; a gone primary never waits.
    make_pod_unready(kube, namespace, status["primary"])
    wait_for(
        lambda: (
            condition(fts.get(), "FailingOver") == "True"
            and next(c for c in fts.status()["conditions"] if c["type"] == "FailingOver")["reason"]
            == "Throttled"
        ),
        what="FailingOver=True reason Throttled",
    )
    time.sleep(2)
    after = fts.status()
    assert after["term"] == status["term"], "no second failover within the hour"
    assert after["primary"] == status["primary"]
    message = next(c for c in after["conditions"] if c["type"] == "FailingOver")["message"]
    assert "maxPerHour" in message
    fts.wait_event("FailoverThrottled")
    # The throttled primary now goes away for good: the limits no longer hold the failover back.
    force_delete_pod(kube, namespace, status["primary"])
    _new_primary_routed(fts, status["primary"], status["term"])


@pytest.mark.parametrize("replicas", [1])
def test_single_replica_primary_comes_back_with_a_new_term(
    kube: Kube, namespace: str, ha_operator: OperatorPair, replicas: int
) -> None:
    fts, status = _ready(kube, namespace, replicas=replicas)
    force_delete_pod(kube, namespace, status["primary"])

    def back() -> dict[str, Any] | None:
        s = fts.status()
        return s if s.get("primary") == status["primary"] and s.get("term") == status["term"] + 1 else None

    wait_for(back, timeout=60, what="the only pod back as primary with term + 1")
    pod = fts.pod(status["primary"])
    assert pod is not None and pod["metadata"]["annotations"]["ftso.dev/term"] == str(status["term"] + 1)

    def recorded() -> dict[str, Any] | None:
        s = fts.status()
        last = (s.get("failovers") or [{}])[-1]
        comeback = last.get("to") == status["primary"] and last.get("term") == status["term"] + 1
        return s if comeback and last.get("routedAt") and fts.primary_routed_exactly() else None

    wait_for(recorded, timeout=30, what="the comeback recorded as a change of primary, and routed")
    assert condition(fts.get(), "PrimaryUnavailable") == "False"


def test_a_primary_service_with_a_selector_from_an_older_version_is_taken_over(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """An older ftso gave `<name>-primary` a selector, so the controller manager kept a slice for it. The
    operator removes the selector and that slice, and then routes the primary through its own slice alone;
    a failover after it is routed exactly."""
    fts, status = _ready(kube, namespace)
    operator.stop()
    service = f"/api/v1/namespaces/{namespace}/services/{fts.name}-primary"
    selector = {"ftso.dev/service": fts.name, "ftso.dev/serving": "true", "ftso.dev/role": "primary"}
    kube.patch(service, {"spec": {"selector": selector}})
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    of_primary = f"kubernetes.io/service-name={fts.name}-primary"

    def managers() -> set[str]:
        return {
            s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by", "")
            for s in kube.items(slices, of_primary)
        }

    wait_for(
        lambda: "endpointslice-controller.k8s.io" in managers(),
        what="the controller manager's slice as before",
    )
    operator.start()
    wait_for(
        lambda: (
            not (kube.get(service) or {}).get("spec", {}).get("selector")
            and managers() == {"operator.ftso.dev"}
        ),
        timeout=30,
        what=f"the selector and the controller's slice gone (slices managed by {managers()})",
    )
    wait_for(fts.primary_routed_exactly, what="the primary routed by the operator's slice")
    force_delete_pod(kube, namespace, status["primary"])
    _new_primary_routed(fts, status["primary"], status["term"])
    assert managers() == {"operator.ftso.dev"}
