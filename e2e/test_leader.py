"""Leader election between real operator processes: a standby takes over a dead leader's Lease in
seconds, never a live one's, whatever the clocks say; a deposed leader writes nothing."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from e2e.control_plane import process_state
from e2e.fts import Fts, manifest
from e2e.kube import ROOT, Kube, wait_for
from e2e.operator_process import OperatorProcess

LEASE_SECONDS = 4


class SkewedOperator(OperatorProcess):
    """`ftso run` with its wall clock shifted by `offset` seconds (e2e/skewed_clock.py)."""

    def __init__(self, kubeconfig: str, log_path: Path, namespace: str, offset: float) -> None:
        super().__init__(kubeconfig, log_path, (namespace,), _election(namespace))
        self.offset = offset

    def start(self) -> SkewedOperator:
        args = [sys.executable, "-m", "e2e.skewed_clock", "--offset", str(self.offset), "--"]
        args += ["--kubeconfig", self.kubeconfig, "run", "--liveness", "", *self.extra]
        args += ["--namespace", *self.namespaces]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self


def _election(namespace: str) -> tuple[str, ...]:
    return ("--leader-election-namespace", namespace, "--lease-seconds", str(LEASE_SECONDS))


def _operator(kube: Kube, namespace: str, log: Path, offset: float = 0.0) -> OperatorProcess:
    if offset:
        return SkewedOperator(kube.kubeconfig, log, namespace, offset).start()
    return OperatorProcess(kube.kubeconfig, log, (namespace,), _election(namespace)).start()


def _identity(operator: OperatorProcess) -> str:
    assert operator.process is not None
    return f"{socket.gethostname()}_{operator.process.pid}"


def _lease(kube: Kube, namespace: str) -> dict[str, Any]:
    lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/ftso-operator")
    return (lease or {}).get("spec") or {}


def _wait_holder(kube: Kube, namespace: str, operator: OperatorProcess, timeout: float = 30) -> None:
    identity = _identity(operator)
    wait_for(
        lambda: _lease(kube, namespace).get("holderIdentity") == identity,
        timeout=timeout,
        interval=0.05,
        what=f"{identity} to hold the Lease",
    )


def _holders_clock_offset(kube: Kube, namespace: str) -> float:
    """How far the holder's wall clock is from ours: its next renewal's renewTime, read as it lands."""
    first = _lease(kube, namespace).get("renewTime")
    renewed = wait_for(
        lambda: (now := _lease(kube, namespace).get("renewTime")) != first and now,
        timeout=LEASE_SECONDS + 5,
        interval=0.05,
        what="a renewal of the Lease",
    )
    return datetime.fromisoformat(str(renewed).replace("Z", "+00:00")).timestamp() - time.time()


def _assert_skewed(kube: Kube, namespace: str, offset: float) -> None:
    """The skew was injected: the holder stamps the Lease with its shifted clock."""
    seen = _holders_clock_offset(kube, namespace)
    assert abs(seen - offset) < 1.5, f"the holder's clock is {seen:+.1f} s off, expected {offset:+.0f} s"


def _freeze(process: subprocess.Popen[bytes]) -> None:
    """SIGSTOP, and the kernel must show the process stopped: a freeze that did not happen proves nothing."""
    process.send_signal(signal.SIGSTOP)
    wait_for(
        lambda: process_state(process.pid) == "T", timeout=5, interval=0.01, what=f"{process.pid} stopped"
    )


def _stop_all(*operators: OperatorProcess) -> None:
    for operator in operators:
        if operator.process is not None and operator.process.poll() is None:
            operator.process.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        operator.stop()


def test_a_standby_takes_over_within_seconds_of_the_leader_dying(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    leader = _operator(kube, namespace, tmp_path / "leader.log")
    _wait_holder(kube, namespace, leader)
    standby = _operator(kube, namespace, tmp_path / "standby.log")
    try:
        time.sleep(2)  # the standby is up and watching the Lease
        assert _lease(kube, namespace)["holderIdentity"] == _identity(leader)
        leader.kill()
        killed = time.monotonic()
        _wait_holder(kube, namespace, standby, timeout=LEASE_SECONDS + 10)
        takeover = time.monotonic() - killed
        print(f"the standby took the Lease {takeover:.2f}s after the leader was killed")
        assert takeover < LEASE_SECONDS + 3
    finally:
        _stop_all(leader, standby)


@pytest.mark.parametrize(("leader_offset", "standby_offset"), [(0, 5), (-5, 0)])
def test_skewed_clocks_do_not_let_a_standby_take_a_healthy_lease(
    kube: Kube, namespace: str, tmp_path: Path, leader_offset: float, standby_offset: float
) -> None:
    leader = _operator(kube, namespace, tmp_path / "leader.log", leader_offset)
    _wait_holder(kube, namespace, leader)
    standby = _operator(kube, namespace, tmp_path / "standby.log", standby_offset)
    try:
        _assert_skewed(kube, namespace, leader_offset)
        transitions = _lease(kube, namespace).get("leaseTransitions")
        watched_until = time.monotonic() + 15
        while time.monotonic() < watched_until:
            lease = _lease(kube, namespace)
            assert lease.get("holderIdentity") == _identity(leader), lease
            assert standby.alive, standby.log_tail()
            time.sleep(0.2)
        assert _lease(kube, namespace).get("leaseTransitions") == transitions
        leader.kill()
        _wait_holder(kube, namespace, standby, timeout=LEASE_SECONDS + 10)  # it was watching all along
        _assert_skewed(kube, namespace, standby_offset)
    finally:
        _stop_all(leader, standby)


def test_a_leader_frozen_past_its_lease_writes_nothing_when_it_wakes(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    old = _operator(kube, namespace, tmp_path / "old.log")
    _wait_holder(kube, namespace, old)
    new = _operator(kube, namespace, tmp_path / "new.log")
    try:
        time.sleep(2)  # the standby is up and watching the Lease
        assert old.process is not None and new.process is not None
        _freeze(old.process)  # a long GC pause, a frozen VM
        _wait_holder(kube, namespace, new, timeout=LEASE_SECONDS + 10)
        _freeze(new.process)  # from here on only the deposed leader runs
        fts = Fts(kube, namespace)
        fts.create(manifest())
        old.process.send_signal(signal.SIGCONT)
        assert old.process.wait(timeout=10) == 3, old.log_tail()
        assert fts.pods() == [], "the deposed leader created pods"
        assert fts.status() == {}, "the deposed leader wrote a status"
    finally:
        _stop_all(old, new)
