"""Tests of the distributed counter: real `counter.py serve` processes on loopback, talked to over HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

COUNTER = Path(__file__).resolve().parent / "counter.py"
STARTUP_TIMEOUT = 10.0
_spec = importlib.util.spec_from_file_location("counter", COUNTER)
assert _spec is not None and _spec.loader is not None
counter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(counter)


def free_port() -> int:
    # The CLI cannot bind port 0, so borrow a free port from the kernel; start() retries if it is taken.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON body), for error statuses too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(COUNTER), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


class Node:
    """One `counter.py serve` process with its own role dir and data dir."""

    def __init__(
        self, base: Path, role: str, term: int, peers: list[str], data_dir: Path | None = None
    ) -> None:
        self.role_dir = base / "role"
        self.data_dir = data_dir or base / "data"
        self.log = base / "serve.log"
        self.role_dir.mkdir(parents=True, exist_ok=True)
        self.set_role(role, term)
        self.peers = peers
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_role(self, role: str, term: int | None = None) -> None:
        # What the kubelet does when the operator relabels the pod.
        (self.role_dir / "role").write_text(role + "\n")
        if term is not None:
            (self.role_dir / "term").write_text(f"{term}\n")

    def start(self) -> Node:
        for _ in range(3):  # another process may grab the free port between free_port() and bind
            self.port = free_port()
            cmd = [sys.executable, str(COUNTER), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            cmd += ["--role-dir", str(self.role_dir), "--data-dir", str(self.data_dir)]
            cmd += ["--peers", ",".join(self.peers)]
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            if self._wait_healthy():
                return self
            self.stop()
        raise AssertionError(f"counter did not start; log:\n{self.log.read_text()}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                if call("GET", f"{self.url}/healthz")[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def value(self) -> int:
        status, body = call("GET", f"{self.url}/value")
        assert status == 200, body
        return int(body["value"])

    def increment(self, by: int = 1) -> tuple[int, dict[str, Any]]:
        return call("POST", f"{self.url}/increment", {"by": by})


NodeFactory = Callable[..., Node]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeFactory]:
    """node(name, role, term, peers=[...]) starts a process; every one is stopped at teardown."""
    started: list[Node] = []

    def make(
        name: str,
        role: str = "replica",
        term: int = 1,
        peers: list[str] | None = None,
        data_dir: Path | None = None,
    ) -> Node:
        n = Node(tmp_path / name, role, term, peers or [], data_dir)
        started.append(n)
        return n.start()

    yield make
    for n in started:
        n.stop()


def test_healthz_and_value_report_role_and_term(node: NodeFactory) -> None:
    primary = node("p", "primary", term=4)
    assert call("GET", f"{primary.url}/healthz") == (200, {"ok": True, "role": "primary", "term": 4})
    assert call("GET", f"{primary.url}/value") == (200, {"value": 0, "term": 4, "role": "primary"})


def test_checkpoint_and_restore_round_trip_keeps_the_value(node: NodeFactory, tmp_path: Path) -> None:
    primary = node("p", "primary", term=2)
    for by in (1, 2, 4):
        assert primary.increment(by)[0] == 200
    checkpoints = tmp_path / "checkpoints"
    # The operator passes the target and the destination as env, as it does for checkpoint Jobs.
    env = {
        "FTSO_TARGET_IP": "127.0.0.1",
        "FTSO_TARGET_PORT": str(primary.port),
        "FTSO_CHECKPOINT_DIR": str(checkpoints),
        "FTSO_CHECKPOINT_ID": "ck-1",
    }
    done = run_cli("checkpoint", env=env)
    assert done.returncode == 0, done.stderr
    saved = json.loads((checkpoints / "ck-1.json").read_text())
    assert (saved["id"], saved["value"], saved["term"]) == ("ck-1", 7, 2)
    assert primary.increment(1) == (200, {"value": 8, "term": 2})
    # With a named Service targetPort the operator leaves FTSO_TARGET_PORT empty: COUNTER_PORT fills in.
    env |= {"FTSO_TARGET_PORT": "", "COUNTER_PORT": str(primary.port), "FTSO_CHECKPOINT_ID": "ck-2"}
    done = run_cli("checkpoint", env=env)
    assert done.returncode == 0, done.stderr
    primary.stop()

    # Into fresh data dirs: a named checkpoint, and the newest one.
    for checkpoint_id, expected in (("ck-1", 7), ("latest", 8)):
        fresh = tmp_path / f"fresh-{checkpoint_id}"
        done = run_cli("restore", "--dir", str(checkpoints), "--id", checkpoint_id, "--data-dir", str(fresh))
        assert done.returncode == 0, done.stderr
        restored = node(f"r-{checkpoint_id}", "replica", term=2, data_dir=fresh)
        assert restored.value() == expected
        assert call("GET", f"{restored.url}/snapshot") == (
            200,
            {"value": expected, "term": 2, "written_term": 2},
        )


def test_checkpoint_of_an_unreachable_target_fails_clearly(tmp_path: Path) -> None:
    done = run_cli(
        "checkpoint", "--target", f"http://127.0.0.1:{free_port()}", "--dir", str(tmp_path), "--id", "x"
    )
    assert done.returncode != 0
    assert "cannot read" in done.stderr
    assert not (tmp_path / "x.json").exists()
    done = run_cli("restore", "--dir", str(tmp_path), "--id", "latest", "--data-dir", str(tmp_path / "d"))
    assert done.returncode != 0
    assert "no checkpoint" in done.stderr


def test_a_restart_keeps_the_value(node: NodeFactory, tmp_path: Path) -> None:
    first = node("a", "primary", term=1)
    assert first.increment(5)[0] == 200
    first.stop()
    assert node("b", "primary", term=1, data_dir=first.data_dir).value() == 5


def test_a_demoted_primary_refuses_writes(node: NodeFactory) -> None:
    primary = node("p", "primary", term=1)
    assert primary.increment() == (200, {"value": 1, "term": 1})
    primary.set_role("replica")
    assert primary.increment() == (409, {"error": "not primary", "role": "replica"})
    primary.set_role("fenced")
    assert primary.increment() == (409, {"error": "not primary", "role": "fenced"})
    assert primary.value() == 1


def test_a_stale_term_is_refused(node: NodeFactory) -> None:
    replica = node("r", "replica", term=3)
    assert call("POST", f"{replica.url}/replicate", {"value": 10, "term": 2})[0] == 409
    # Nothing replicated yet: a new replica answers no reads rather than a 0 it never held.
    assert call("GET", f"{replica.url}/value")[0] == 503
    assert call("POST", f"{replica.url}/replicate", {"value": 10, "term": 3}) == (
        200,
        {"value": 10, "term": 3},
    )

    # An old primary (term file 1) hears from a newer one (term 2): it is fenced even before relabelling.
    primary = node("p", "primary", term=1)
    assert primary.increment()[0] == 200
    assert call("POST", f"{primary.url}/replicate", {"value": 5, "term": 2})[0] == 200
    status, body = primary.increment()
    assert (status, body.get("error")) == (409, "stale term"), body
    assert primary.value() == 5


def test_no_acknowledged_increment_is_lost_after_a_promotion(node: NodeFactory) -> None:
    replica_a = node("a", "replica", term=1)
    replica_b = node("b", "replica", term=1)
    primary = node("p", "primary", term=1, peers=[replica_a.url, replica_b.url])

    # Concurrent clients: the primary must still ship every acknowledged value before answering.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: primary.increment()[0], range(50)))
    acknowledged = results.count(200)
    assert acknowledged == 50, results
    assert replica_a.value() == replica_b.value() == acknowledged

    # A write that cannot reach every replica is not acknowledged; where it landed, it stays (a reader
    # never sees the value go back), so it may survive, as a write whose answer was lost may.
    replica_b.stop()
    status, body = primary.increment()
    assert status == 503, body
    assert primary.value() == replica_a.value() == acknowledged + 1

    # The primary dies; the operator promotes replica a with a higher term.
    primary.stop()
    replica_a.set_role("primary", term=2)
    assert replica_a.value() == acknowledged + 1
    assert replica_a.increment() == (200, {"value": acknowledged + 2, "term": 2})


def test_a_new_primary_catches_up_from_its_peers(node: NodeFactory, tmp_path: Path) -> None:
    """A replaced pod (empty) promoted before any write reached it takes the newest state from a peer."""
    replica_a = node("a", "replica", term=1)
    fresh = node("fresh", "replica", term=1)
    primary = node("p", "primary", term=1, peers=[replica_a.url])
    for _ in range(5):
        assert primary.increment()[0] == 200
    primary.stop()
    fresh.stop()
    promoted = node("fresh2", "primary", term=2, peers=[replica_a.url])
    assert promoted.value() == 0
    assert promoted.increment() == (200, {"value": 6, "term": 2})
    assert replica_a.value() == 6


def test_peers_come_from_the_role_dir(tmp_path: Path) -> None:
    role_dir = tmp_path / "role"
    role_dir.mkdir()
    (role_dir / "peers").write_text("10.0.0.2\n10.0.0.3\nfd00::4\n")
    c = counter.Counter(role_dir, None, [], port=9000)
    assert c.peers == ["http://10.0.0.2:9000", "http://10.0.0.3:9000", "http://[fd00::4]:9000"]
    assert counter.Counter(role_dir, None, ["http://x:1"]).peers == ["http://x:1"]
