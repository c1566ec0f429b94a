"""The real node (e2e/cluster/node.sh) from the tests' side: the counter sample (examples/counter) running
as real pods under the operator, a client that records every write and read it makes through the
Services, and faults that act on real processes."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e.kube import ROOT, Kube, condition, pod_ready, tool_path, wait_for

NODE = "real-0"
COUNTER_YAML = ROOT / "examples" / "counter" / "counter.yaml"
CLAIM = "counter-checkpoints"


def cluster_name() -> str:
    return os.environ.get("FTSO_CLUSTER_NAME") or "ftso"


def cache_dir() -> Path:
    return Path(tool_path("kubectl")).parent.parent


def require_real_node(kube: Kube) -> None:
    """Fails (never skips) the test when the real node cannot run here, with the reason up.sh found."""
    why = cache_dir() / f"real-node-{cluster_name()}.unavailable"
    if why.exists():
        pytest.fail(f"the real node is unavailable on this machine: {why.read_text().strip()}")
    node = kube.get(f"/api/v1/nodes/{NODE}")
    if node is None or condition(node, "Ready") != "True":
        log = cache_dir() / "logs" / f"real-node-{cluster_name()}.log"
        pytest.fail(f"the real node {NODE} is not Ready: run `make cluster-up` (log: {log})")


class CheckpointVolume:
    """A hostPath PersistentVolume on the real node, pre-bound to the counter's claim in one namespace."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.name = f"{namespace}-checkpoints"
        self.path = cache_dir() / "node" / cluster_name() / "volumes" / namespace

    def create(self) -> CheckpointVolume:
        self.path.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o777)  # the counter runs as uid 10001; fsGroup does not apply to hostPath
        namespace = self.name.removesuffix("-checkpoints")
        self.kube.create(
            "/api/v1/persistentvolumes",
            {
                "metadata": {"name": self.name, "labels": {"ftso.dev/e2e": "true"}},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(self.path), "type": "Directory"},
                    "claimRef": {"namespace": namespace, "name": CLAIM},
                },
            },
        )
        return self

    def checkpoints(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in self.path.glob("*.json"):
            record = json.loads(path.read_text())
            found[record["id"]] = record
        return found

    def delete(self) -> None:
        self.kube.delete(f"/api/v1/persistentvolumes/{self.name}")
        shutil.rmtree(self.path, ignore_errors=True)


def deploy_counter(kube: Kube, namespace: str) -> None:
    """examples/counter/counter.yaml exactly as shipped."""
    kube.kubectl("apply", "-n", namespace, "-f", str(COUNTER_YAML))


def service_url(kube: Kube, namespace: str, service: str) -> str:
    svc = kube.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    assert svc is not None, service
    return f"http://{svc['spec']['clusterIP']}:8080"


def call(method: str, url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any], str]:
    """(status, body, answering pod); status 0 when no answer came (refused, timed out, reset)."""
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return (
                response.status,
                json.loads(response.read() or b"{}"),
                response.headers.get("X-Counter-Pod", ""),
            )
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read() or b"{}")
        except ValueError:
            body = {}
        return error.code, body, error.headers.get("X-Counter-Pod", "")
    except (OSError, ValueError):
        return 0, {}, ""


@dataclass
class Op:
    kind: str  # write or read
    start: float
    end: float
    status: int
    value: int | None = None
    term: int | None = None
    pod: str = ""
    error: str = ""


@dataclass
class History:
    """Every write and read the client made, and every fault, in the order they happened."""

    ops: list[Op] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)

    def fault(self, what: str) -> float:
        at = time.time()
        with self.lock:
            self.faults.append((at, what))
        return at

    def writes(self) -> list[Op]:
        with self.lock:
            return [o for o in self.ops if o.kind == "write"]

    def acked_since(self, at: float) -> int:
        return sum(1 for o in self.writes() if o.status == 200 and o.start >= at)

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {"ops": [asdict(o) for o in self.ops], "faults": list(self.faults)}


class Client:
    """One writer (increments through `<name>-primary`, one at a time) and one reader (`<name>-replicas`)."""

    def __init__(self, primary_url: str, replicas_url: str, history: History) -> None:
        self.primary_url = primary_url
        self.replicas_url = replicas_url
        self.history = history
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]

    def __enter__(self) -> Client:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _op(self, kind: str, method: str, url: str) -> None:
        start = time.time()
        status, body, pod = call(method, url)
        value, term = body.get("value"), body.get("term")
        self.history.add(
            Op(
                kind,
                start,
                time.time(),
                status,
                value if isinstance(value, int) else None,
                term if isinstance(term, int) else None,
                pod,
                str(body.get("error") or ""),
            )
        )
        if status != 200:
            time.sleep(0.05)

    def write_once(self) -> int:
        self._op("write", "POST", f"{self.primary_url}/increment")
        return self.history.writes()[-1].status

    def _write(self) -> None:
        while not self.stopping.is_set():
            self._op("write", "POST", f"{self.primary_url}/increment")
            time.sleep(0.02)

    def _read(self) -> None:
        while not self.stopping.is_set():
            self._op("read", "GET", f"{self.replicas_url}/value")
            time.sleep(0.05)


def verdict(history: History, final: int) -> dict[str, Any]:
    """The checks over a finished history. A 200 is acknowledged; a 409 refused (not applied); anything
    else (503, no answer) is indeterminate: it may or may not have been applied."""
    writes = history.writes()
    acked = [w for w in writes if w.status == 200]
    indeterminate = [w for w in writes if w.status not in (200, 409)]
    acked_values = [w.value or 0 for w in acked]
    terms = [w.term or 0 for w in acked]
    reads = [o for o in history.ops if o.kind == "read" and o.status == 200]
    backwards_per_pod = 0
    backwards_across_pods = 0
    last_by_pod: dict[str, int] = {}
    last = None
    for r in sorted(reads, key=lambda o: o.end):
        value = r.value or 0
        if value < last_by_pod.get(r.pod, value):
            backwards_per_pod += 1
        last_by_pod[r.pod] = max(value, last_by_pod.get(r.pod, value))
        if last is not None and value < last:
            backwards_across_pods += 1
        last = value
    return {
        "writes": len(writes),
        "acknowledged": len(acked),
        "refused": sum(1 for w in writes if w.status == 409),
        "indeterminate": len(indeterminate),
        "reads": len(reads),
        "faults": [what for _, what in history.faults],
        "final": final,
        # Every acknowledged increment is in the final value, and nothing beyond the indeterminate ones.
        "lost": max(0, len(acked) - final, (max(acked_values) if acked_values else 0) - final),
        "beyond_attempted": max(0, final - len(acked) - len(indeterminate)),
        # One writer: a stale primary accepting a write shows as a value or a term going back.
        "acked_values_not_increasing": sum(1 for a, b in itertools.pairwise(acked_values) if b <= a),
        "acked_terms_going_back": sum(1 for a, b in itertools.pairwise(terms) if b < a),
        "terms": sorted(set(terms)),
        "reads_backwards_per_pod": backwards_per_pod,
        # Replicas take a write one after the other: across pods a read may trail another by one write.
        "reads_backwards_across_pods": backwards_across_pods,
    }


def container_pid(kube: Kube, namespace: str, pod: str) -> int:
    """The host pid of the pod's first container's process, found by its container id in /proc/*/cgroup."""
    body = kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod}")
    assert body is not None, pod
    statuses = (body.get("status") or {}).get("containerStatuses") or []
    container_id = str(statuses[0].get("containerID") or "").split("://")[-1]
    assert container_id, f"{pod} has no running container"
    for cgroup in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            if container_id in cgroup.read_text():
                return int(cgroup.parent.name)
        except OSError:
            continue
    raise AssertionError(f"no process of container {container_id[:12]} ({pod})")


def kill_container_process(kube: Kube, namespace: str, pod: str) -> None:
    """kill -9 of the workload's process, as a crash inside the container (the kubelet restarts it);
    returns once the process is gone, and fails if it is not within 10 s."""
    pid = container_pid(kube, namespace, pod)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _runs(pid), timeout=10, interval=0.05, what=f"{pod}'s process {pid} to die")


def _runs(pid: int) -> bool:
    """Whether the process exists and is not a zombie (dead, waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def all_ready(kube: Kube, namespace: str, name: str = "counter", replicas: int = 3) -> bool:
    pods = [
        p
        for p in kube.items(f"/api/v1/namespaces/{namespace}/pods", f"ftso.dev/service={name}")
        if not p["metadata"].get("deletionTimestamp")
    ]
    return len(pods) == replicas and all(
        pod_ready(p) and p["metadata"]["labels"].get("ftso.dev/serving") == "true" for p in pods
    )


def wait_value(url: str, timeout: float = 60) -> int:
    def value() -> int | None:
        status, body, _ = call("GET", f"{url}/value")
        return int(body["value"]) if status == 200 else None

    got = wait_for(lambda: (v := value()) is not None and (v,), timeout=timeout, what=f"a value from {url}")
    return got[0]
