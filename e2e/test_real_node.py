"""The counter sample (examples/counter/counter.yaml, as shipped) as real pods on the real node, under the
operator: its data survives failover, switchover, an operator crash, checkpoint and restore. A client on
this machine writes and reads through the Services (kube-proxy) and keeps the whole history, which is
checked at the end and saved in .e2e-logs/ with its verdict."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from e2e.conftest import LOGS
from e2e.fts import Fts
from e2e.invariants import invariant_watch
from e2e.kube import Kube, ftso_cli, wait_for
from e2e.operator_process import OperatorProcess
from e2e.real_node import (
    CheckpointVolume,
    Client,
    History,
    all_ready,
    call,
    deploy_counter,
    kill_container_process,
    require_real_node,
    service_url,
    verdict,
    wait_value,
)

NAME = "counter"


@pytest.fixture
def counter(kube: Kube, namespace: str, operator: OperatorProcess) -> Iterator[Fts]:
    require_real_node(kube)
    volume = CheckpointVolume(kube, namespace).create()
    deploy_counter(kube, namespace)
    fts = Fts(kube, namespace, NAME)
    fts.wait_ready(timeout=120)
    wait_for(lambda: all_ready(kube, namespace), timeout=120, what="3 counter pods ready and serving")
    wait_for(fts.primary_routed_exactly, timeout=60, what="counter-primary routed to the primary")
    yield fts
    volume.delete()


def _peers_current(fts: Fts) -> bool:
    pods = fts.live_pods()
    ips = {p["metadata"]["name"]: p["status"].get("podIP", "") for p in pods}
    for pod in pods:
        listed = set((pod["metadata"].get("annotations") or {}).get("ftso.dev/peers", "").split())
        if listed != {ip for name, ip in ips.items() if name != pod["metadata"]["name"] and ip}:
            return False
    return True


def _save(name: str, history: History, result: dict[str, object]) -> None:
    LOGS.mkdir(exist_ok=True)
    (LOGS / f"{name}.json").write_text(json.dumps({"verdict": result, **history.to_json()}, indent=1))


def test_no_acknowledged_write_is_lost_through_failures_and_switchover(
    kube: Kube, namespace: str, operator: OperatorProcess, counter: Fts
) -> None:
    fts = counter
    primary_url = service_url(kube, namespace, f"{NAME}-primary")
    replicas_url = service_url(kube, namespace, f"{NAME}-replicas")
    history = History()

    def primary() -> str:
        return str(fts.status()["primary"])

    def a_replica() -> str:
        current = primary()
        return next(p["metadata"]["name"] for p in fts.live_pods() if p["metadata"]["name"] != current)

    def kill_primary_process() -> None:
        kill_container_process(kube, namespace, primary())

    def delete_primary_pod() -> None:
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{primary()}")

    def switchover() -> None:
        fts.kube.patch(
            fts.path, {"metadata": {"annotations": {"ftso.dev/switchover": f"@{uuid.uuid4().hex[:8]}"}}}
        )

    def operator_killed_mid_failover() -> None:
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{primary()}", grace=0)
        time.sleep(0.3)
        operator.kill()
        time.sleep(2)
        operator.start()

    def kill_replica_process() -> None:
        kill_container_process(kube, namespace, a_replica())

    faults: list[tuple[str, Callable[[], None]]] = [
        ("primary's process killed", kill_primary_process),
        ("primary pod deleted", delete_primary_pod),
        ("switchover", switchover),
        ("operator killed mid-failover", operator_killed_mid_failover),
        ("replica's process killed", kill_replica_process),
    ]
    with invariant_watch(kube, namespace, NAME), Client(primary_url, replicas_url, history):
        wait_for(lambda: history.acked_since(0) >= 10, timeout=30, what="the first acknowledged writes")
        for what, inject in faults:
            at = history.fault(what)
            inject()
            time.sleep(1)
            wait_for(
                lambda at=at: history.acked_since(at + 1) >= 10 and all_ready(kube, namespace),  # type: ignore[misc]
                timeout=120,
                what=f"writes acknowledged and 3 pods serving again after: {what}",
            )
    # The operator's part: every pod's peers annotation names the other live pods.
    wait_for(lambda: _peers_current(fts), timeout=15, what="every pod's ftso.dev/peers current")
    # The kubelet's part: it refreshes the primary's peers file on its own schedule, and a replaced replica
    # gets data only from writes made once the primary knows it. So the last acknowledged writes (in the
    # history too) go on until every pod holds the same value.
    closing = Client(primary_url, replicas_url, history)

    def converged() -> tuple[dict[str, object], int] | None:
        if closing.write_once() != 200:
            return None
        final = wait_value(primary_url)
        values = {
            p["metadata"]["name"]: call("GET", f"http://{p['status']['podIP']}:8080/value")[1].get("value")
            for p in fts.live_pods()
        }
        return (values, final) if set(values.values()) == {final} else None

    _, final = wait_for(
        converged, timeout=90, interval=1, what="every pod holding the last acknowledged write"
    )
    result = verdict(history, final)
    _save(f"history-{namespace}", history, result)
    assert result["acknowledged"] >= 50, result
    assert result["lost"] == 0, result
    assert result["beyond_attempted"] == 0, result
    assert result["acked_values_not_increasing"] == 0, result
    assert result["acked_terms_going_back"] == 0, result
    assert result["reads_backwards_per_pod"] == 0, result
    # The deletions and the switchover each make a new term (the killed process may, if the kubelet
    # reports it before restarting it).
    assert len(result["terms"]) >= 4, result  # type: ignore[arg-type]


def _write(url: str, count: int) -> int:
    """count acknowledged increments; returns the value after the last one."""
    value = 0
    for _ in range(count):
        _status, body, _ = wait_for(
            lambda: (r := call("POST", f"{url}/increment")) and r[0] == 200 and r, timeout=30, what="a write"
        )
        value = int(body["value"])
    return value


def _checkpoint(kube: Kube, namespace: str, fts: Fts) -> str:
    assert ftso_cli(kube, "checkpoint", NAME, "-n", namespace, "--wait").returncode == 0
    return str(fts.status()["lastSuccessfulCheckpoint"])


def _delete_every_pod(kube: Kube, namespace: str, fts: Fts) -> None:
    for pod in fts.live_pods():
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}", grace=0)


def test_checkpoint_then_every_pod_lost_recovers_the_checkpointed_value(
    kube: Kube, namespace: str, operator: OperatorProcess, counter: Fts
) -> None:
    fts = counter
    volume = CheckpointVolume(kube, namespace)
    primary_url = service_url(kube, namespace, f"{NAME}-primary")
    checkpointed = _write(primary_url, 20)
    checkpoint_id = _checkpoint(kube, namespace, fts)
    saved = volume.checkpoints()[checkpoint_id]
    assert saved["value"] == checkpointed, saved  # the Job copied the primary's or a replica's real state
    finished = time.time()
    after = _write(primary_url, 15)
    last_write = time.time()
    assert after == checkpointed + 15

    _delete_every_pod(kube, namespace, fts)
    recovery = wait_for(
        lambda: (r := fts.status().get("recovery")) and r.get("checkpoint") == checkpoint_id and r,
        timeout=60,
        what="recovery from the checkpoint started",
    )
    wait_for(
        lambda: (r := fts.status().get("recovery")) and r.get("completedAt"),
        timeout=120,
        what="recovery completed",
    )
    wait_for(lambda: all_ready(kube, namespace), timeout=120, what="3 pods back")
    wait_for(fts.primary_routed_exactly, timeout=60, what="the new primary routed")
    restored = wait_value(primary_url)
    # The value is the checkpoint's: the 15 writes after it are what was lost, all inside the window.
    assert restored == checkpointed, (restored, checkpointed)
    window = recovery["dataLossWindowSeconds"]
    assert last_write - finished - 1 <= window <= time.time() - finished + 1, (window, recovery)
    for pod in fts.live_pods():
        assert pod["metadata"]["annotations"].get("ftso.dev/restored-from") == checkpoint_id
    assert _write(primary_url, 1) == checkpointed + 1


def test_ftso_restore_onto_a_running_service(
    kube: Kube, namespace: str, operator: OperatorProcess, counter: Fts
) -> None:
    fts = counter
    primary_url = service_url(kube, namespace, f"{NAME}-primary")
    first = _write(primary_url, 5)
    first_id = _checkpoint(kube, namespace, fts)
    second = _write(primary_url, 7)
    _checkpoint(kube, namespace, fts)
    _write(primary_url, 3)
    # Back to the first checkpoint: new and replaced pods load it. Replace the replicas, then the primary
    # (all at once would be a recovery, which takes the latest checkpoint).
    assert ftso_cli(kube, "restore", NAME, "-n", namespace, "--id", first_id).returncode == 0
    assert second == first + 7
    primary = fts.status()["primary"]
    for pod in fts.live_pods():
        if pod["metadata"]["name"] != primary:
            kube.delete(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}", grace=0)
    time.sleep(1)
    wait_for(lambda: all_ready(kube, namespace), timeout=120, what="3 pods ready, the replicas restored")
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/{primary}", grace=0)
    time.sleep(1)
    wait_for(lambda: all_ready(kube, namespace), timeout=120, what="3 pods ready, every one restored")
    wait_for(fts.primary_routed_exactly, timeout=60, what="the new primary routed")
    assert wait_value(primary_url) == first
    for pod in fts.live_pods():
        assert pod["metadata"]["annotations"].get("ftso.dev/restored-from") == first_id
    assert _write(primary_url, 1) == first + 1
