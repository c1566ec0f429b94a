"""spec.traffic on the real control plane: the HTTPRoute's weights follow roles, slow start, draining and
failover; a provider's object carries RoundRobin and Random; without a Gateway, a provider or the Gateway
API itself, TrafficPolicyReady says why and the plain Services still route.

No Gateway controller runs here: the tests read what the operator wrote, and play the controller's part
when they write the route's status."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.faults import make_pod_ready, make_pod_unready
from e2e.fts import ROLE, Fts, create_gateway, manifest
from e2e.kube import ROOT, Kube, condition, wait_for
from e2e.operator_process import OperatorProcess
from ftso.client import ApiError

GATEWAY_API = "/apis/gateway.networking.k8s.io/v1"
CPU = "kwok.x-k8s.io/usage-cpu"  # kwok simulates this usage; metrics-server measures it
ISTIO_CRDS = "kubernetes/customresourcedefinitions.gen.yaml"
# The operator reads the route's status at most every 10 s, on a reconcile (every 20 s at the latest).
ROUTE_STATUS_SEEN_WITHIN = 45


def _route(kube: Kube, namespace: str) -> dict[str, Any] | None:
    return kube.get(f"{GATEWAY_API}/namespaces/{namespace}/httproutes/svc")


def _weights(route: dict[str, Any] | None) -> dict[str, int]:
    if route is None:
        return {}
    return {b["name"]: b.get("weight", 1) for b in route["spec"]["rules"][0]["backendRefs"]}


def _traffic_condition(fts: Fts) -> tuple[str, str]:
    for c in fts.status().get("conditions") or []:
        if c["type"] == "TrafficPolicyReady":
            return c["status"], c["reason"]
    return "", ""


class WeightTimeline:
    """The route's weights each time they change, polled in the background: the test output shows them."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.changes: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> WeightTimeline:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        print("route weights over time (seconds since start: weights):")
        for at, weights in self.changes:
            print(f"  {at:6.1f}  {weights}")

    def _follow(self) -> None:
        kube = Kube(self.kube.kubeconfig)  # its own: a client's event loop serves one thread
        try:
            while not self._stop.wait(0.2):
                try:
                    weights = _weights(_route(kube, self.namespace))
                except ApiError:
                    continue
                if not self.changes or self.changes[-1][1] != weights:
                    self.changes.append((time.monotonic() - self._started, weights))
        finally:
            kube.close()

    def seen(self, pod: str) -> list[int]:
        return [w[pod] for _, w in self.changes if pod in w]


def _wait_weights(kube: Kube, namespace: str, wanted: dict[str, int], timeout: float = 30) -> None:
    wait_for(
        lambda: _weights(_route(kube, namespace)) == wanted,
        timeout=timeout,
        what=f"route weights {wanted} (now {_weights(_route(kube, namespace))})",
    )


def _roles(fts: Fts) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["labels"].get(ROLE, "") for p in fts.live_pods()}


def test_weighted_route_follows_roles_slow_start_draining_and_failover(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    create_gateway(kube, namespace)
    fts = Fts(kube, namespace)
    weights = {"primary": 300, "replica": 100, "slowStartSeconds": 10}
    fts.create(manifest(traffic={"policy": "Weighted", "gatewayRef": {"name": "web"}, "weights": weights}))
    with WeightTimeline(kube, namespace) as timeline:
        primary = fts.wait_ready()["primary"]
        full = {name: 300 if name == primary else 100 for name in ("svc-0", "svc-1", "svc-2")}
        _wait_weights(kube, namespace, full)
        assert min(timeline.seen(primary)) < 300, "the primary ramped up over its slow start"
        # Each pod has its own Service, which routes to it alone.
        for name in full:
            wait_for(
                lambda n=name: fts.routed(n) == {fts.pod_ip(n)}, what=f"Service {name} routes to its pod"
            )
        assert {p["name"]: p["weight"] for p in fts.status()["pods"]} == full

        replica = next(n for n in full if n != primary)
        make_pod_unready(kube, namespace, replica)
        _wait_weights(kube, namespace, {**full, replica: 0}, timeout=15)  # drained, still in its Service
        assert kube.get(f"/api/v1/namespaces/{namespace}/services/{replica}") is not None
        make_pod_ready(kube, namespace, replica)
        _wait_weights(kube, namespace, full)
        assert 0 < min(w for w in timeline.seen(replica)[timeline.seen(replica).index(0) :] if w) < 100

        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{primary}", grace=0)
        new_primary = wait_for(
            lambda: next((n for n, r in _roles(fts).items() if r == "primary" and n != primary), None),
            what="a new primary",
        )
        wait_for(
            lambda: _weights(_route(kube, namespace)).get(new_primary) == 300,
            what=f"the new primary {new_primary} at weight 300",
        )
        fts.wait_ready()
        _wait_weights(kube, namespace, {n: 300 if n == new_primary else 100 for n in full})
    route = _route(kube, namespace)
    assert route is not None
    assert route["spec"]["parentRefs"][0]["name"] == "web"
    assert route["metadata"]["ownerReferences"][0]["name"] == "svc"
    assert _traffic_condition(fts) == ("False", "RoutePending")
    fts.wait_event("TrafficPolicyNotReady")


def test_the_condition_follows_what_the_gateway_controller_writes_in_the_route(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    create_gateway(kube, namespace)
    fts = Fts(kube, namespace)
    fts.create(manifest(traffic={"policy": "Weighted", "gatewayRef": {"name": "web"}}))
    fts.wait_ready()
    wait_for(lambda: _route(kube, namespace), what="the HTTPRoute")
    parent = {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "lastTransitionTime": "2026-11-27T00:00:00Z",
            }
        ],
    }
    kube.request(
        "PATCH",
        f"{GATEWAY_API}/namespaces/{namespace}/httproutes/svc/status",
        body={"status": {"parents": [parent]}},
        content_type="application/merge-patch+json",
    )
    wait_for(
        lambda: _traffic_condition(fts) == ("True", "RouteAccepted"),
        timeout=ROUTE_STATUS_SEEN_WITHIN,
        what="TrafficPolicyReady=True once the controller accepted the route",
    )


@pytest.fixture
def istio_destination_rules(kube: Kube) -> Iterator[None]:
    """Istio's DestinationRule CRD, from the istio.io/api module pinned in versions.sh, for one test."""
    script = f"source {ROOT}/e2e/cluster/versions.sh && go mod download -json istio.io/api@$ISTIO_API_VERSION"
    info = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    directory = next(line.split('"')[3] for line in info.splitlines() if '"Dir"' in line)
    documents = (ROOT / directory / ISTIO_CRDS).read_text().split("\n---\n")
    rule = next(d for d in documents if "name: destinationrules.networking.istio.io" in d)
    kube.apply(rule)
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/destinationrules.networking.istio.io"
    wait_for(
        lambda: condition(kube.get(crd), "Established") == "True", what="the DestinationRule CRD established"
    )
    yield
    kube.kubectl("delete", "crd", "destinationrules.networking.istio.io", "--ignore-not-found")


def _destination_rule(kube: Kube, namespace: str) -> dict[str, Any] | None:
    return kube.get(f"/apis/networking.istio.io/v1/namespaces/{namespace}/destinationrules/svc")


def test_round_robin_and_random_are_carried_by_istios_destination_rule(
    kube: Kube, namespace: str, istio_destination_rules: None, operator: OperatorProcess
) -> None:
    create_gateway(kube, namespace)
    fts = Fts(kube, namespace)
    fts.create(manifest(traffic={"policy": "RoundRobin", "gatewayRef": {"name": "web"}}))
    fts.wait_ready()
    rule = wait_for(lambda: _destination_rule(kube, namespace), what="the DestinationRule")
    assert rule["spec"] == {
        "host": f"svc.{namespace}.svc.cluster.local",
        "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
    }
    assert _weights(_route(kube, namespace)) == {"svc": 1}  # one backend: every serving pod
    fts.patch_spec({"traffic": {"policy": "Random"}})
    wait_for(
        lambda: (
            (_destination_rule(kube, namespace) or {}).get("spec", {}).get("trafficPolicy")
            == {"loadBalancer": {"simple": "RANDOM"}}
        ),
        what="the DestinationRule RANDOM",
    )
    fts.patch_spec({"traffic": {"gatewayRef": None}})
    wait_for(
        lambda: _route(kube, namespace) is None and _destination_rule(kube, namespace) is None,
        what="the route and the DestinationRule gone with the gatewayRef",
    )
    wait_for(
        lambda: _traffic_condition(fts) == ("True", "KubeProxy"), what="TrafficPolicyReady=True KubeProxy"
    )


def test_a_missing_gateway_or_provider_is_said_and_the_plain_services_still_route(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts = Fts(kube, namespace)
    traffic = {
        "policy": "RoundRobin",
        "gatewayRef": {"name": "web"},
        "provider": "EnvoyGateway",
        "sessionAffinity": {"clientIPTimeoutSeconds": 300},
        "distribution": "PreferSameZone",
    }
    fts.create(manifest(traffic=traffic))
    fts.wait_ready()
    wait_for(lambda: _traffic_condition(fts) == ("False", "GatewayNotFound"), what="GatewayNotFound")
    wait_for(lambda: len(fts.routed("svc")) == 3, what="the plain Service svc routing to every pod")
    service = kube.get(f"/api/v1/namespaces/{namespace}/services/svc") or {}
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 300}}
    assert service["spec"]["trafficDistribution"] == "PreferSameZone"
    create_gateway(kube, namespace)
    wait_for(
        lambda: _traffic_condition(fts) == ("False", "ProviderMissing"),
        timeout=ROUTE_STATUS_SEEN_WITHIN,
        what="ProviderMissing: Envoy Gateway's BackendTrafficPolicy is not installed",
    )
    assert _weights(_route(kube, namespace)) == {"svc": 1}
    fts.patch_spec({"traffic": {"sessionAffinity": None, "distribution": None}})
    wait_for(
        lambda: (
            (kube.get(f"/api/v1/namespaces/{namespace}/services/svc") or {})["spec"].get("sessionAffinity")
            == "None"
        ),
        what="session affinity off again",
    )
    assert (
        "trafficDistribution" not in (kube.get(f"/api/v1/namespaces/{namespace}/services/svc") or {})["spec"]
    )


@pytest.fixture
def without_gateway_api(kube: Kube) -> Iterator[None]:
    script = ROOT / "e2e/cluster/gateway-api.sh"
    subprocess.run([str(script), "--remove"], check=True)
    yield
    subprocess.run([str(script)], check=True)


def test_without_the_gateway_api_the_plain_services_route_and_a_later_install_is_picked_up(
    kube: Kube, namespace: str, without_gateway_api: None, operator: OperatorProcess
) -> None:
    fts = Fts(kube, namespace)
    fts.create(manifest(traffic={"policy": "Weighted", "gatewayRef": {"name": "web"}}))
    fts.wait_ready()
    wait_for(lambda: _traffic_condition(fts) == ("False", "GatewayAPIMissing"), what="GatewayAPIMissing")
    fts.wait_event("TrafficPolicyNotReady")
    wait_for(lambda: len(fts.routed("svc")) == 3, what="the plain Service svc routing to every pod")
    subprocess.run([str(ROOT / "e2e/cluster/gateway-api.sh")], check=True)
    create_gateway(kube, namespace)
    wait_for(
        lambda: len(_weights(_route(kube, namespace))) == 3,
        timeout=ROUTE_STATUS_SEEN_WITHIN + 30,
        what="the route written once the Gateway API is installed",
    )


def test_admission_refuses_policies_kube_proxy_cannot_carry(kube: Kube, namespace: str) -> None:
    fts = Fts(kube, namespace)
    with pytest.raises(ApiError, match=r"need traffic\.gatewayRef"):
        fts.create(manifest(traffic={"policy": "Weighted"}))
    with pytest.raises(ApiError, match="at most 16 replicas"):
        fts.create(manifest(replicas=17, traffic={"policy": "Weighted", "gatewayRef": {"name": "web"}}))


def test_weights_follow_measured_cpu_in_bounded_steps_without_oscillating(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    create_gateway(kube, namespace)
    fts = Fts(kube, namespace)
    follow = {"cpuCapacity": "1", "floorPercent": 10, "maxStepPercent": 20}
    traffic = {"policy": "Weighted", "gatewayRef": {"name": "web"}, "weights": {"followLoad": follow}}
    fts.create(manifest(traffic=traffic))
    fts.wait_ready()
    cpu = {"svc-0": "100m", "svc-1": "400m", "svc-2": "800m"}
    for pod, usage in cpu.items():
        kube.patch(f"/api/v1/namespaces/{namespace}/pods/{pod}", {"metadata": {"annotations": {CPU: usage}}})
    with WeightTimeline(kube, namespace) as timeline:
        _wait_weights(kube, namespace, {"svc-0": 90, "svc-1": 60, "svc-2": 20}, timeout=150)
    for pod in cpu:
        seen = timeline.seen(pod)
        steps = [b - a for a, b in itertools.pairwise(seen)]
        assert all(-20 <= s <= 0 for s in steps), f"{pod}: {seen} moved up or by more than a step"
