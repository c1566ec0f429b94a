"""Chaos: faults of the operator's own view and process, against the real control plane. Every test runs
under the invariant recorder (one serving primary, no stale term serving, one ready endpoint behind
`<name>-primary`, terms never back)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.conftest import LOGS
from e2e.faults import (
    force_delete_pod,
    make_pod_ready,
    make_pod_unready,
    resume_heartbeat,
    stop_heartbeat,
)
from e2e.fts import Fts, manifest
from e2e.invariants import invariant_watch
from e2e.kube import Kube, condition, wait_for
from e2e.operator_process import OperatorPair, OperatorProcess

FAST = {"delaySeconds": 2, "nodeLostAfterSeconds": 12}


def _ready(kube: Kube, namespace: str, **failover: Any) -> tuple[Fts, dict[str, Any]]:
    fts = Fts(kube, namespace)
    fts.create(manifest(failover={**FAST, **failover}))
    status = fts.wait_ready()
    wait_for(fts.primary_routed_exactly, what="the first primary routed")
    return fts, status


def _uids(fts: Fts) -> set[str]:
    return {p["metadata"]["uid"] for p in fts.pods()}


def _routed_after(fts: Fts, old: str, term: int, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = fts.status()
        fresh = status.get("primary") not in ("", old) and status.get("term", 0) > term
        return status if fresh and fts.primary_routed_exactly() else None

    return wait_for(done, timeout=timeout, interval=0.02, what=f"a routed primary instead of {old}")


def test_back_to_back_primary_kills_each_fail_over_at_once(
    kube: Kube, namespace: str, ha_operator: OperatorPair
) -> None:
    """The default anti-flapping limits (10 s apart, 12 an hour) never hold back a gone primary."""
    with invariant_watch(kube, namespace):
        fts = Fts(kube, namespace)
        fts.create(manifest())
        status = fts.wait_ready()
        wait_for(fts.primary_routed_exactly, what="the first primary routed")
        durations = []
        for _ in range(10):
            started = time.monotonic()
            force_delete_pod(kube, namespace, status["primary"])
            status = _routed_after(fts, status["primary"], status["term"], timeout=9)
            durations.append(time.monotonic() - started)
        print(f"10 back-to-back kills, seconds to routed: {[round(d, 2) for d in durations]}")
        assert status["term"] == 11
        assert all(c["reason"] != "Throttled" for c in fts.status()["conditions"])


@pytest.fixture
def heartbeats_back(kube: Kube, healthy_nodes: None) -> Iterator[list[str]]:
    stopped: list[str] = []
    yield stopped
    for node in stopped:
        resume_heartbeat(kube, node)


def test_most_nodes_silent_at_once_is_held_not_acted_on(
    kube: Kube, namespace: str, ha_operator: OperatorPair, heartbeats_back: list[str]
) -> None:
    """Most nodes (two of three kwok nodes, three of four with the real node) stop their heartbeats
    together: a partition of the operator's view, not node failures. No pod is deleted, no failover; a condition and an Event say why; then service resumes."""
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        uids = _uids(fts)
        nodes = sorted({p["spec"]["nodeName"] for p in fts.pods()})
        primary_node = next(
            p["spec"]["nodeName"] for p in fts.pods() if p["metadata"]["name"] == status["primary"]
        )
        # More than half of all nodes (the real node, whose kubelet the test cannot silence, counts too).
        everyone = [n["metadata"]["name"] for n in kube.items("/api/v1/nodes")]
        kwok = [n["metadata"]["name"] for n in kube.items("/api/v1/nodes", "type=kwok")]
        silent = [primary_node, *(n for n in nodes if n != primary_node)]
        silent += [n for n in kwok if n not in silent]
        silent = silent[: len(everyone) // 2 + 1]
        for node in silent:
            stop_heartbeat(kube, node)
            heartbeats_back.append(node)
        wait_for(
            lambda: condition(fts.get(), "NodeLossSuspended") == "True",
            timeout=40,
            what="NodeLossSuspended=True",
        )
        reason = next(c for c in fts.status()["conditions"] if c["type"] == "NodeLossSuspended")["reason"]
        assert reason == "PartitionSuspected"
        fts.wait_event("NodeLossSuspended")
        time.sleep(5)  # past the confirmed loss of every silent node
        assert _uids(fts) == uids, "no pod deleted while node loss is held"
        assert fts.status()["term"] == status["term"] and fts.status()["primary"] == status["primary"]
        for node in silent:
            resume_heartbeat(kube, node)
        wait_for(
            lambda: condition(fts.get(), "NodeLossSuspended") == "False",
            timeout=60,
            what="NodeLossSuspended=False once heartbeats return",
        )
        fts.wait_event("NodeLossResumed")
        assert _uids(fts) == uids and fts.wait_ready()["term"] == status["term"]


def test_operator_killed_after_the_failover_write_still_fences(
    kube: Kube, namespace: str, ha_operator: OperatorPair
) -> None:
    """The operator dies right after writing the new term, before any label moved; the old primary turns
    Ready again meanwhile. The next operator fences it from the record in status: it never serves again."""
    with invariant_watch(kube, namespace) as (pods, _):
        fts, status = _ready(kube, namespace)
        old = status["primary"]
        old_uid = next(p["metadata"]["uid"] for p in fts.pods() if p["metadata"]["name"] == old)
        ha_operator.stop()
        crashing = OperatorProcess(
            kube.kubeconfig,
            LOGS / f"{namespace}-crashing.log",
            namespaces=(namespace,),
            launcher=("e2e.crashing_operator",),
        ).start()
        try:
            make_pod_unready(kube, namespace, old)
            assert crashing.process is not None
            assert crashing.process.wait(timeout=60) == 9, crashing.log_tail()
        finally:
            crashing.stop()
        written = fts.status()
        assert written["term"] == status["term"] + 1 and written["primary"] != old
        record = written["failovers"][-1]
        assert record["fenceUid"] == old_uid and not record.get("fencedAt")
        old_pod = fts.pod(old) or {}
        assert old_pod["metadata"]["labels"]["ftso.dev/role"] == "primary", (
            "the crash left the labels as they were"
        )
        make_pod_ready(kube, namespace, old)
        ha_operator.start()
        _routed_after(fts, old, status["term"])
        wait_for(lambda: old_uid not in _uids(fts), what=f"{old} (uid {old_uid}) fenced and deleted")
        wait_for(lambda: fts.status()["failovers"][-1].get("fencedAt"), what="the fence recorded as done")
        fts.wait_ready()
    after_restart = [
        s.object
        for s in pods.snapshot()
        if s.object["metadata"]["uid"] == old_uid
        and s.object["metadata"].get("annotations", {}).get("ftso.dev/term") == str(written["term"])
    ]
    assert all(p["metadata"]["labels"]["ftso.dev/serving"] == "false" for p in after_restart)
    assert all(p["metadata"]["labels"]["ftso.dev/role"] == "fenced" for p in after_restart)
