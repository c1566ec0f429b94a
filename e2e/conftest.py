"""End-to-end fixtures: the real local control plane, a fresh namespace per test, the real operator."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.control_plane import ControlPlane
from e2e.fault_proxy import FaultProxy
from e2e.faults import heal_all_nodes, lease_age, restore_node_addresses
from e2e.kube import ROOT, Kube, kubeconfig_path, wait_for
from e2e.operator_process import OperatorPair, OperatorProcess

LOGS = ROOT / ".e2e-logs"


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    path = kubeconfig_path()
    if not Path(path).exists():
        pytest.fail(f"no local cluster: {path} is missing; run `make cluster-up` (make test does it)")
    client = Kube(path)
    try:
        client.request("GET", "/version")
    except Exception as error:
        pytest.fail(f"the local cluster at {path} is not reachable: {error}")
    client.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    client.kubectl(
        "wait", "--for=condition=Established", "crd/faulttolerantservices.ftso.dev", "--timeout=60s"
    )
    yield client
    client.close()


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"e2e-{slug}-{uuid.uuid4().hex[:5]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": {"ftso.dev/e2e": "true"}}})
    wait_for(
        lambda: kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=60,
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def healthy_nodes(kube: Kube) -> Iterator[None]:
    """Tests that break nodes leave them healed for the next test."""
    heal_all_nodes(kube)
    yield
    heal_all_nodes(kube)
    wait_for(
        lambda: all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            for n in kube.items("/api/v1/nodes", "type=kwok")
        ),
        timeout=60,
        what="every kwok node Ready again",
    )
    wait_for(
        lambda: all(
            lease_age(kube, n["metadata"]["name"]) < 15 for n in kube.items("/api/v1/nodes", "type=kwok")
        ),
        timeout=60,
        what="every kwok node's Lease renewed again",
    )
    restore_node_addresses(kube)


@pytest.fixture
def operator(kube: Kube, namespace: str, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """An operator of our own, limited to the test's namespace, so a test may kill and restart it."""
    LOGS.mkdir(exist_ok=True)
    process = OperatorProcess(kube.kubeconfig, LOGS / f"{namespace}.log", namespaces=(namespace,)).start()
    yield process
    alive = process.alive
    process.stop()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(f"--- operator log ({'alive' if alive else 'dead'}) ---\n{process.log_tail()}")


@pytest.fixture
def ha_operator(kube: Kube, namespace: str, request: pytest.FixtureRequest) -> Iterator[OperatorPair]:
    """Two operator replicas with leader election on, limited to the test's namespace."""
    LOGS.mkdir(exist_ok=True)
    pair = OperatorPair(kube.kubeconfig, LOGS, namespace).start()
    yield pair
    alive = pair.alive
    pair.stop()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(f"--- operator logs ({'alive' if alive else 'dead'}) ---\n{pair.log_tail()}")


@pytest.fixture
def control_plane(kube: Kube) -> Iterator[ControlPlane]:
    """The cluster's processes; whatever a test did, every component runs and is healthy afterwards."""
    plane = ControlPlane.from_kubeconfig(kube.kubeconfig)
    plane.wait_healthy()
    yield plane
    plane.resume_all()
    plane.wait_healthy(timeout=180)


@pytest.fixture
def proxy(kube: Kube) -> Iterator[FaultProxy]:
    with FaultProxy(kube.kubeconfig) as started:
        yield started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
