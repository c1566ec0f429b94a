"""The local control plane itself: real scheduling, endpoints, and the fault injection the tests rely on."""

from __future__ import annotations

from e2e.faults import (
    fail_container,
    lease_age,
    make_node_not_ready,
    make_node_ready,
    resume_heartbeat,
    stop_heartbeat,
)
from e2e.fts import FAKE_NODES
from e2e.kube import Kube, condition, pod_ready, ready_endpoint_ips, wait_for

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}],
                **FAKE_NODES,
            },
        },
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
}


def _web_pods(kube: Kube, namespace: str) -> list[dict]:
    return kube.items(f"/api/v1/namespaces/{namespace}/pods", "app=web")


def _deploy(kube: Kube, namespace: str) -> list[dict]:
    kube.apply(DEPLOYMENT, namespace)
    kube.apply(SERVICE, namespace)

    def three_ready() -> list[dict] | None:
        pods = [p for p in _web_pods(kube, namespace) if pod_ready(p)]
        return pods if len(pods) == 3 else None

    return wait_for(three_ready, timeout=60, what="3 Running and Ready pods")


def test_deployment_pods_become_ready_and_are_routed(kube: Kube, namespace: str) -> None:
    pods = _deploy(kube, namespace)
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 3, "every pod has its own IP"
    assert {p["spec"]["nodeName"] for p in pods} <= {"kwok-node-0", "kwok-node-1", "kwok-node-2"}
    wait_for(
        lambda: ready_endpoint_ips(kube, namespace, "web") == ips,
        what="the EndpointSlice to list the 3 pod IPs",
    )


def test_failed_container_shows_and_leaves_the_endpoints(kube: Kube, namespace: str) -> None:
    victim = _deploy(kube, namespace)[0]
    name, ip = victim["metadata"]["name"], victim["status"]["podIP"]
    wait_for(lambda: ip in ready_endpoint_ips(kube, namespace, "web"), what="the victim routed")
    fail_container(kube, namespace, name)

    def failed() -> dict | None:
        pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        terminated = any("terminated" in (s.get("state") or {}) for s in statuses)
        return pod if pod and terminated and condition(pod, "Ready") == "False" else None

    wait_for(failed, timeout=30, what="the container terminated and the pod not Ready")
    wait_for(
        lambda: ip not in ready_endpoint_ips(kube, namespace, "web"),
        what="the pod out of the ready endpoints",
    )


def _node_ready(kube: Kube, node: str) -> str | None:
    return condition(kube.get(f"/api/v1/nodes/{node}"), "Ready")


def test_node_not_ready_and_back(kube: Kube, healthy_nodes: None) -> None:
    make_node_not_ready(kube, "kwok-node-2")
    wait_for(lambda: _node_ready(kube, "kwok-node-2") == "False", timeout=30, what="node NotReady")
    make_node_ready(kube, "kwok-node-2")
    wait_for(lambda: _node_ready(kube, "kwok-node-2") == "True", timeout=30, what="node Ready again")


def test_node_heartbeat_stops_and_resumes(kube: Kube, healthy_nodes: None) -> None:
    wait_for(lambda: lease_age(kube, "kwok-node-1") < 15, what="a fresh lease")
    stop_heartbeat(kube, "kwok-node-1")
    wait_for(lambda: lease_age(kube, "kwok-node-1") > 20, timeout=60, what="the lease to go stale")
    resume_heartbeat(kube, "kwok-node-1")
    wait_for(lambda: lease_age(kube, "kwok-node-1") < 12, timeout=40, what="the lease renewed again")
