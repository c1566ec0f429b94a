"""The control plane's process faults without a cluster: a component stand-in (a `sleep` process with the
pid file and kwok.yaml kwokctl would write) paused, resumed and killed, and each must have taken effect."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e import control_plane as control_plane_module
from e2e.control_plane import ControlPlane, process_state

SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, subprocess.Popen[bytes]]]:
    component = {"name": "kube-apiserver", "binary": SLEEP, "args": ["600"], "workDir": str(tmp_path)}
    (tmp_path / "kwok.yaml").write_text(yaml.safe_dump({"components": [component]}))
    process = subprocess.Popen([SLEEP, "600"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[0] != SLEEP.encode():
        assert time.monotonic() < deadline, "sleep never started"
        time.sleep(0.01)  # until the exec: the forked child shows its parent's command line before
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "sleep.pid").write_text(str(process.pid))
    yield ControlPlane("test", tmp_path), process
    process.send_signal(signal.SIGCONT)
    process.kill()
    process.wait(10)


def test_pause_and_resume_take_effect(plane: tuple[ControlPlane, subprocess.Popen[bytes]]) -> None:
    control, process = plane
    with control.paused("kube-apiserver"):
        assert process_state(process.pid) == "T"
    assert process_state(process.pid) in ("S", "R")


def test_a_pause_that_did_not_stop_the_process_fails(
    plane: tuple[ControlPlane, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    control, process = plane
    monkeypatch.setattr(control_plane_module, "PAUSE_SECONDS", 0.2, raising=False)
    monkeypatch.setattr(os, "kill", lambda pid, sig: None)  # the signal never arrives
    with pytest.raises(AssertionError, match="did not stop"):
        control.pause("kube-apiserver")
    assert process_state(process.pid) in ("S", "R")


def test_a_kill_must_end_the_process(
    plane: tuple[ControlPlane, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    control, process = plane
    monkeypatch.setattr(control_plane_module, "PAUSE_SECONDS", 0.2, raising=False)
    with monkeypatch.context() as patched:
        patched.setattr(os, "kill", lambda pid, sig: None)
        with pytest.raises(AssertionError, match="still runs"):
            control.kill("kube-apiserver")
    assert control.kill("kube-apiserver") == process.pid
    assert process.wait(5) == -signal.SIGKILL
