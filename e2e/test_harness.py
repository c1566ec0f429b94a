"""The fault harness itself, against the real cluster: the fault proxy forwards everything and each fault has
its effect; the control plane survives a paused API server, restarts of etcd and the API server, and a
killed scheduler, which its supervisor brings back. Every test leaves the whole cluster healthy."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.control_plane import APISERVER, ETCD, SCHEDULER, ControlPlane
from e2e.fault_proxy import WRITES, Fault, FaultProxy, Match
from e2e.fts import FAKE_NODES, Fts, manifest
from e2e.kube import Kube, wait_for
from e2e.operator_process import OperatorProcess
from ftso.client import ApiError, KubeClient

LOGS = Path(__file__).resolve().parent.parent / ".e2e-logs"


@pytest.fixture
def proxied(proxy: FaultProxy, tmp_path: Path) -> Iterator[Kube]:
    """The test's API client, through the proxy."""
    client = Kube(proxy.write_kubeconfig(tmp_path / "proxied-kubeconfig"))
    yield client
    client.close()


def leases(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def lease(name: str, holder: str = "harness") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30}}


def one_shot(kubeconfig: str, timeout: float) -> Kube:
    """A client that neither retries nor waits long, so a fault shows as it is."""
    client = Kube(kubeconfig)
    client.client = KubeClient(client.client.credentials, attempts=1, timeout=timeout)
    return client


class Watcher:
    """The operator's own list-and-watch of Leases, on a thread of its own; records (type, name)."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.events: list[tuple[str, str]] = []
        self._client = KubeClient.from_environment(kubeconfig)
        self._namespace = namespace
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._run(),), daemon=True
        )
        self._thread.start()

    async def _run(self) -> None:
        self._task = asyncio.create_task(self._client.watch("Lease", self._namespace, self._record))
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        finally:
            await self._client.close()

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        self.events.append((kind, obj["metadata"]["name"]))

    def saw(self, name: str) -> bool:
        return any(seen == name for _, seen in self.events)

    def stop(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)


@pytest.fixture
def watchers(
    kube: Kube, proxy: FaultProxy, proxied: Kube, namespace: str
) -> Iterator[tuple[Watcher, Watcher]]:
    """A watch straight to the API server and one through the proxy, both listening already."""
    direct, through = Watcher(kube.kubeconfig, namespace), Watcher(proxied.kubeconfig, namespace)
    # Seeing the Lease is not enough: the list can show it before the watch is open. An answered watch
    # through the proxy is a stream a fault set now will reach.
    watch = Match(watch=True, path=f"/namespaces/{namespace}/leases")
    wait_for(
        lambda: any(e.status == 200 for e in proxy.requests(watch)), timeout=30, what="the proxied watch"
    )
    kube.create(leases(namespace), lease("warm-up"))
    wait_for(lambda: direct.saw("warm-up") and through.saw("warm-up"), timeout=30, what="both watches")
    yield direct, through
    direct.stop()
    through.stop()


def test_the_proxy_forwards_reads_writes_and_watches(
    kube: Kube, proxied: Kube, proxy: FaultProxy, namespace: str, watchers: tuple[Watcher, Watcher]
) -> None:
    _, through = watchers
    path = leases(namespace)
    proxied.create(path, lease("one"))
    assert (
        proxied.patch(f"{path}/one", {"spec": {"holderIdentity": "two"}})["spec"]["holderIdentity"] == "two"
    )
    assert (kube.get(f"{path}/one") or {})["spec"]["holderIdentity"] == "two"
    assert "one" in [item["metadata"]["name"] for item in proxied.items(path)]
    wait_for(lambda: through.saw("one"), timeout=10, what="the watch through the proxy to see the Lease")
    proxied.delete(f"{path}/one")
    assert kube.get(f"{path}/one") is None
    wait_for(lambda: ("DELETED", "one") in through.events, timeout=10, what="the deletion through the proxy")
    assert proxied.kubectl("get", "leases", "-n", namespace, "-o", "name").stdout.split() == [
        "lease.coordination.k8s.io/warm-up"
    ]
    seen = {(e.method, e.status) for e in proxy.requests(Match(path=f"/namespaces/{namespace}/leases"))}
    assert {("POST", 201), ("PATCH", 200), ("GET", 200), ("DELETE", 200)} <= seen
    assert proxy.requests(Match(watch=True, user_agent="ftso-operator"))
    assert proxy.requests(Match(user_agent="^kubectl"))


def test_injected_errors_reach_the_client_and_nothing_is_written(
    kube: Kube, proxy: FaultProxy, proxied: Kube, namespace: str
) -> None:
    path = leases(namespace)
    client = one_shot(proxied.kubeconfig, timeout=10)
    try:
        for status, reason in ((429, "TooManyRequests"), (500, "InternalError"), (503, "ServiceUnavailable")):
            with proxy.fault(Fault.error(status, Match(method=WRITES), retry_after=1)):
                with pytest.raises(ApiError) as error:
                    client.create(path, lease(f"refused-{status}"))
                assert (error.value.status, error.value.reason) == (status, reason)
                assert client.items(path) == []  # reads go through
            assert kube.get(f"{path}/refused-{status}") is None
        logged = proxy.requests(Match(method="POST"))
        assert [e.status for e in logged] == [429, 500, 503]
    finally:
        client.close()


def test_clients_retry_a_burst_of_429s(kube: Kube, proxy: FaultProxy, proxied: Kube, namespace: str) -> None:
    path = leases(namespace)
    fault = proxy.add_fault(Fault.error(429, Match(method="POST"), retry_after=1, times=2))
    proxied.kubectl("create", "-n", namespace, "-f", "-", stdin=_lease_yaml("by-kubectl"))
    assert fault.hits == 2
    assert [e.status for e in proxy.requests(Match(method="POST"))] == [429, 429, 201]
    fault = proxy.add_fault(Fault.error(429, Match(method="POST"), retry_after=1, times=2))
    proxied.create(path, lease("by-the-operators-client"))
    assert fault.hits == 2
    assert kube.get(f"{path}/by-kubectl") is not None
    assert kube.get(f"{path}/by-the-operators-client") is not None


def _lease_yaml(name: str) -> str:
    return (
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\n"
        f"metadata: {{name: {name}}}\nspec: {{holderIdentity: harness}}\n"
    )


def test_latency_slows_the_matching_requests_only(proxy: FaultProxy, proxied: Kube, namespace: str) -> None:
    with proxy.fault(Fault.latency(1.5, Match(path="/leases"))):
        start = time.monotonic()
        proxied.items(leases(namespace))
        assert time.monotonic() - start >= 1.5
        start = time.monotonic()
        proxied.get(f"/api/v1/namespaces/{namespace}")
        assert time.monotonic() - start < 1.5


def test_a_write_whose_answer_is_lost_is_applied(
    kube: Kube, proxy: FaultProxy, proxied: Kube, namespace: str
) -> None:
    client = one_shot(proxied.kubeconfig, timeout=2)
    try:
        lost = proxy.add_fault(Fault.lose_response(Match(method=WRITES, path="/leases")))
        with pytest.raises(ApiError) as error:
            client.create(leases(namespace), lease("applied"))
        assert lost.hits == 1
        assert error.value.status == 0  # the client's timeout: no answer at all
        assert kube.get(f"{leases(namespace)}/applied") is not None
        assert proxy.requests(Match(method="POST"))[0].status is None
    finally:
        client.close()


def test_a_dropped_lease_renewal_never_arrives(
    kube: Kube, proxy: FaultProxy, proxied: Kube, namespace: str
) -> None:
    path = f"{leases(namespace)}/renewed"
    kube.create(leases(namespace), lease("renewed", holder="before"))
    client = one_shot(proxied.kubeconfig, timeout=2)
    try:
        dropped = proxy.add_fault(Fault.drop(Match(method="PATCH|PUT", path=r"/leases/renewed$")))
        with pytest.raises(ApiError):
            client.patch(path, {"spec": {"holderIdentity": "after"}})
        assert dropped.hits == 1  # the error is the drop's, not some other failure's
        assert client.get(f"{leases(namespace)}/warm-up") is None  # other requests go through
    finally:
        client.close()
    assert (kube.get(path) or {})["spec"]["holderIdentity"] == "before"


def test_a_stalled_watch_gets_nothing_while_a_direct_one_does(
    kube: Kube, proxy: FaultProxy, namespace: str, watchers: tuple[Watcher, Watcher]
) -> None:
    direct, through = watchers
    stall = proxy.add_fault(Fault.stall(Match(path=f"/namespaces/{namespace}/leases")))
    assert stall.hits == 1  # the open watch
    kube.create(leases(namespace), lease("unseen"))
    wait_for(lambda: direct.saw("unseen"), timeout=10, what="the direct watch to see the Lease")
    time.sleep(2)
    assert not through.saw("unseen")
    assert not proxy.requests(Match(watch=True), since=time.time() - 2)  # no reconnect either: silent


def test_a_cut_watch_reconnects_and_catches_up(
    kube: Kube, proxy: FaultProxy, namespace: str, watchers: tuple[Watcher, Watcher]
) -> None:
    _, through = watchers
    moment = time.time()
    with proxy.fault(Fault.cut(Match(path=f"/namespaces/{namespace}/leases"))):
        kube.create(leases(namespace), lease("missed"))
        wait_for(
            lambda: len(proxy.requests(Match(watch=True), since=moment)) >= 2, what="a refused reconnect"
        )
        assert not through.saw("missed")
    wait_for(lambda: through.saw("missed"), timeout=30, what="the watch to catch up after the cut")


def test_the_operator_runs_through_the_proxy(
    kube: Kube, proxy: FaultProxy, proxied: Kube, namespace: str
) -> None:
    LOGS.mkdir(exist_ok=True)
    fts = Fts(kube, namespace)
    operator = OperatorProcess(proxied.kubeconfig, LOGS / f"{namespace}.log", namespaces=(namespace,)).start()
    try:
        fts.create(manifest(replicas=2))
        fts.wait_ready()
        assert proxy.requests(Match(watch=True, user_agent="^kopf/"))  # kopf's watches
        assert proxy.requests(Match(method=WRITES, user_agent="ftso-operator", path=namespace))
    finally:
        operator.stop()
    stopped = time.time()
    kube.patch(fts.path, {"spec": {"replicas": 3}})
    time.sleep(2)
    assert not proxy.requests(Match(method=WRITES), since=stopped)  # the log shows who wrote when


def test_a_briefly_paused_api_server_comes_back(kube: Kube, control_plane: ControlPlane) -> None:
    client = one_shot(kube.kubeconfig, timeout=1)
    try:
        with control_plane.paused(APISERVER):
            assert control_plane.component_problem(control_plane.component(APISERVER)) == "paused"
            with pytest.raises(ApiError) as error:
                client.request("GET", "/version")
            assert error.value.status == 0
            time.sleep(2)
        wait_for(lambda: client.request("GET", "/version"), timeout=30, what="the API server to answer")
    finally:
        client.close()
    control_plane.wait_healthy()


def test_a_stopped_api_server_refuses_connections_then_returns(
    kube: Kube, control_plane: ControlPlane
) -> None:
    client = one_shot(kube.kubeconfig, timeout=5)
    try:
        with control_plane.stopped(APISERVER, grace=0):
            assert control_plane.pid(APISERVER) is None
            start = time.monotonic()
            with pytest.raises(ApiError) as error:
                client.request("GET", "/version")
            assert error.value.status == 0 and time.monotonic() - start < 5  # refused, not hanging
        control_plane.wait_healthy()
        assert client.request("GET", "/version")
    finally:
        client.close()


@pytest.mark.parametrize("component", [ETCD, APISERVER])
def test_a_restarted_component_leaves_a_healthy_cluster(
    kube: Kube, control_plane: ControlPlane, namespace: str, component: str
) -> None:
    before = control_plane.pid(component)
    control_plane.restart(component)
    after = control_plane.pid(component)
    assert after is not None and after != before
    control_plane.wait_healthy()
    kube.create(leases(namespace), lease(f"after-{component}"))
    assert kube.get(f"{leases(namespace)}/after-{component}") is not None
    assert control_plane.component(component).log_file.with_suffix(".previous.log").exists()


def test_the_supervisor_brings_a_killed_scheduler_back(
    kube: Kube, control_plane: ControlPlane, namespace: str
) -> None:
    assert control_plane.supervisor_pid(), "no supervisor: run e2e/cluster/up.sh"
    killed = control_plane.kill(SCHEDULER)
    wait_for(
        lambda: control_plane.pid(SCHEDULER) not in (None, killed), timeout=30, what="a new kube-scheduler"
    )
    control_plane.wait_healthy()
    pod = {
        "metadata": {"name": "scheduled"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **FAKE_NODES},
    }
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    wait_for(
        lambda: ((kube.get(f"/api/v1/namespaces/{namespace}/pods/scheduled") or {}).get("spec") or {}).get(
            "nodeName"
        ),
        timeout=30,
        what="the new scheduler to place a pod",
    )
