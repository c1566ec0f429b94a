"""Chaos of the control plane and of the operator's connection to it, with real processes: the API server
paused and restarted, etcd restarted, write storms of 429 and 5xx, watches stalled or cut, a leader whose
renewals are blocked. The operator must never be the fault: no pod wrongly deleted, no needless failover,
converged again soon after. Every test runs under the invariant recorder."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import LOGS
from e2e.control_plane import APISERVER, ETCD, ControlPlane
from e2e.fault_proxy import WRITES, Fault, FaultProxy, Match
from e2e.faults import force_delete_pod
from e2e.fts import Fts, manifest
from e2e.invariants import invariant_watch
from e2e.kube import Kube, wait_for
from e2e.operator_process import OperatorPair, OperatorProcess

FAILOVER = {"delaySeconds": 2, "nodeLostAfterSeconds": 12}
LEASE_SECONDS = 4


def _ready(kube: Kube, namespace: str, replicas: int = 3) -> tuple[Fts, dict[str, Any]]:
    fts = Fts(kube, namespace)
    fts.create(manifest(replicas=replicas, failover=FAILOVER))
    status = fts.wait_ready()
    wait_for(fts.primary_routed_exactly, what="the first primary routed")
    return fts, status


def _uids(fts: Fts) -> set[str]:
    return {p["metadata"]["uid"] for p in fts.pods()}


def _ready_within(fts: Fts, seconds: float, since: float) -> float:
    """Seconds from `since` until the resource is Ready with its primary routed; fails past `seconds`."""
    fts.wait_ready(timeout=seconds)
    wait_for(
        fts.primary_routed_exactly, timeout=max(1.0, seconds - (time.monotonic() - since)), what="routed"
    )
    return time.monotonic() - since


def _assert_untouched(fts: Fts, uids: set[str], status: dict[str, Any]) -> None:
    assert _uids(fts) == uids, "no pod was deleted or added"
    now = fts.status()
    assert now["term"] == status["term"] and now["primary"] == status["primary"], "no failover"


@pytest.mark.parametrize("component", [APISERVER, ETCD])
def test_paused_30s_nothing_deleted_no_failover(
    kube: Kube, namespace: str, ha_operator: OperatorPair, control_plane: ControlPlane, component: str
) -> None:
    """Heartbeats stop arriving for 30 s, everywhere at once: a view in doubt, not 3 lost nodes."""
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        uids = _uids(fts)
        with control_plane.paused(component):
            time.sleep(30)
        resumed = time.monotonic()
        took = _ready_within(fts, 15, resumed)
        _assert_untouched(fts, uids, status)
        print(f"{component} paused 30 s: Ready and routed {took:.1f} s after the resume; pods deleted: 0")
    control_plane.wait_healthy(timeout=120)


@pytest.mark.parametrize("component", [APISERVER, ETCD])
def test_restarted_nothing_deleted_no_failover(
    kube: Kube, namespace: str, ha_operator: OperatorPair, control_plane: ControlPlane, component: str
) -> None:
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        uids = _uids(fts)
        started = time.monotonic()
        control_plane.restart(component)
        control_plane.wait_healthy(timeout=120)
        took = _ready_within(fts, 30, time.monotonic())
        _assert_untouched(fts, uids, status)
        print(
            f"{component} restarted: cluster healthy after {time.monotonic() - started - took:.1f} s, "
            f"resource Ready {took:.1f} s later; pods deleted: 0"
        )


@pytest.fixture
def proxied_operator(
    kube: Kube, namespace: str, proxy: FaultProxy, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """One operator that reaches the API server only through the fault proxy."""
    config = proxy.write_kubeconfig(tmp_path / "proxied-kubeconfig")
    process = OperatorProcess(config, LOGS / f"{namespace}-proxied.log", namespaces=(namespace,)).start()
    yield process
    process.stop()


def test_write_storm_of_429_and_5xx_converges(
    kube: Kube, namespace: str, proxy: FaultProxy, proxied_operator: OperatorProcess
) -> None:
    """60 s in which every write is refused (429 with Retry-After, then 500 and 503) while work piles up:
    the operator neither crashes nor duplicates anything, and converges once writes go through."""
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        storm = [
            Fault.error(429, Match(method=WRITES, path=namespace), retry_after=1),
            Fault.error(500, Match(method=WRITES, path=namespace)),
            Fault.error(503, Match(method=WRITES, path=namespace)),
        ]
        began = time.time()
        fault = proxy.add_fault(storm[0])
        kube.patch(fts.path, {"spec": {"replicas": 5}})
        replica = next(
            p["metadata"]["name"] for p in fts.pods() if p["metadata"]["name"] != status["primary"]
        )
        force_delete_pod(kube, namespace, replica)
        for nxt in storm[1:]:
            time.sleep(20)
            proxy.remove_fault(fault)
            fault = proxy.add_fault(nxt)
        time.sleep(20)
        proxy.remove_fault(fault)
        cleared = time.monotonic()
        # The storm reached the operator: each kind of refusal answered some of its writes in the server's
        # place (the test's own writes are not the operator's, and do not count).
        injected = proxy.injected(
            Match(method=WRITES, user_agent="ftso-operator", path=namespace), since=began
        )
        assert all(injected[f"error {f.status}"] > 0 for f in storm), injected
        refused = sum(injected.values())
        assert proxied_operator.alive, proxied_operator.log_tail()
        took = _ready_within(fts, 60, cleared)
        pods = fts.pods()
        assert len(pods) == 5 and len({p["metadata"]["name"] for p in pods}) == 5
        assert fts.status()["term"] == status["term"], "no failover: the primary never failed"
        print(f"write storm 60 s: {refused} writes refused; converged {took:.1f} s after it ended")


def test_stalled_watches_are_noticed_and_restarted(
    kube: Kube, namespace: str, proxy: FaultProxy, proxied_operator: OperatorProcess
) -> None:
    """Every watch goes silent without closing. A replica deleted meanwhile is replaced from the periodic
    relist, and the silent watches are abandoned and opened again within the resync period."""
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        stalled = proxy.add_fault(Fault.stall(Match(watch=True)))
        moment = time.time()
        assert stalled.hits > 0, "no open watch of the operator was stalled"
        replica = next(
            p["metadata"]["name"] for p in fts.pods() if p["metadata"]["name"] != status["primary"]
        )
        old_uid = next(p["metadata"]["uid"] for p in fts.pods() if p["metadata"]["name"] == replica)
        force_delete_pod(kube, namespace, replica)
        wait_for(
            lambda: any(
                p["metadata"]["name"] == replica and p["metadata"]["uid"] != old_uid for p in fts.pods()
            ),
            timeout=40,
            what=f"{replica} replaced although every watch is stalled",
        )
        proxy.remove_fault(stalled)
        wait_for(
            lambda: proxy.requests(Match(watch=True, path=f"{namespace}/pods"), since=moment + 1),
            timeout=75,
            what="kopf's pod watch abandoned and opened again",
        )
        wait_for(
            lambda: proxy.requests(Match(watch=True, path="kube-node-lease"), since=moment + 1),
            timeout=40,
            what="the heartbeat watch abandoned and opened again",
        )
        fts.wait_ready(timeout=60)
        assert fts.status()["term"] == status["term"]


def test_primary_deleted_while_the_watches_were_cut(
    kube: Kube, namespace: str, proxy: FaultProxy, proxied_operator: OperatorProcess
) -> None:
    with invariant_watch(kube, namespace):
        fts, status = _ready(kube, namespace)
        refused = proxy.add_fault(Fault.drop(Match(watch=True)))
        assert proxy.cut_streams(Match(watch=True)) > 0, "no open watch was cut"
        force_delete_pod(kube, namespace, status["primary"])
        time.sleep(5)
        proxy.remove_fault(refused)
        assert refused.hits > 0, "no watch was opened again (and dropped) while they were cut"
        back = time.monotonic()
        wait_for(
            lambda: fts.status().get("term", 0) > status["term"] and fts.primary_routed_exactly(),
            timeout=30,
            what="a failover within 30 s of the watches returning",
        )
        print(
            f"primary deleted while watches were cut: routed {time.monotonic() - back:.1f} s after they returned"
        )
        fts.wait_ready()


def _identity(process: OperatorProcess) -> str:
    assert process.process is not None
    return f"{socket.gethostname()}_{process.process.pid}"


def _holder(kube: Kube, namespace: str) -> tuple[str, str]:
    lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/ftso-operator") or {}
    spec = lease.get("spec") or {}
    return str(spec.get("holderIdentity") or ""), str(spec.get("acquireTime") or "")


def test_a_leader_whose_renewals_are_blocked_stops_before_the_standby_takes_over(
    kube: Kube, namespace: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The leader reaches the API only through the proxy, which starts dropping its Lease renewals. It
    must stop acting before its Lease can expire; the standby then takes over; and the proxy's log shows
    no write of the old leader after the takeover."""
    election = ("--leader-election-namespace", namespace, "--lease-seconds", str(LEASE_SECONDS))
    config = proxy.write_kubeconfig(tmp_path / "proxied-kubeconfig")
    leader = OperatorProcess(config, LOGS / f"{namespace}-leader.log", (namespace,), election).start()
    wait_for(lambda: _holder(kube, namespace)[0] == _identity(leader), what="the proxied replica to lead")
    standby = OperatorProcess(
        kube.kubeconfig, LOGS / f"{namespace}-standby.log", (namespace,), election
    ).start()
    try:
        with invariant_watch(kube, namespace):
            fts, status = _ready(kube, namespace)
            renewals = proxy.add_fault(Fault.drop(Match(path="leases/ftso-operator")))
            force_delete_pod(kube, namespace, status["primary"])  # work for whoever leads
            wait_for(
                lambda: _holder(kube, namespace)[0] == _identity(standby), timeout=30, what="the takeover"
            )
            assert renewals.hits > 0, "the leader's renewals were never dropped"
            acquired = _holder(kube, namespace)[1]
            taken = datetime.fromisoformat(acquired.replace("Z", "+00:00")).timestamp()
            assert leader.process is not None and leader.process.wait(timeout=10) == 3, leader.log_tail()
            wait_for(
                lambda: fts.status().get("term", 0) > status["term"] and fts.primary_routed_exactly(),
                timeout=30,
                what="the failover done by one of them",
            )
            fts.wait_ready()
        late = [
            (r.method, r.path, r.status)
            for r in proxy.requests(Match(method=WRITES), since=taken)
            if "leases/ftso-operator" not in r.path
        ]
        assert not late, f"the deposed leader wrote after the takeover: {late}"
    finally:
        leader.stop()
        standby.stop()
