"""Helpers around one FaultTolerantService in a test namespace."""

from __future__ import annotations

import copy
from typing import Any

from e2e.kube import Kube, condition, ready_endpoint_ips, wait_for

ROLE = "ftso.dev/role"
SERVING = "ftso.dev/serving"
# kwok's nodes carry this taint, so that a workload that tolerates nothing (examples/counter) runs on the
# real node (e2e/cluster/node.sh). Fake workloads, whose images exist nowhere, tolerate it and stay on kwok's.
FAKE_NODES: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


def manifest(name: str = "svc", *, replicas: int = 3, image: str = "app:1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "ftso.dev/v1alpha1",
        "kind": "FaultTolerantService",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}
                    ],
                    **copy.deepcopy(FAKE_NODES),
                },
            },
            **spec,
        },
    }
    return body


class Fts:
    def __init__(self, kube: Kube, namespace: str, name: str = "svc") -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.path = f"/apis/ftso.dev/v1alpha1/namespaces/{namespace}/faulttolerantservices/{name}"

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.kube.create(self.path.rsplit("/", 1)[0], copy.deepcopy(body))

    def get(self) -> dict[str, Any] | None:
        return self.kube.get(self.path)

    def status(self) -> dict[str, Any]:
        return (self.get() or {}).get("status") or {}

    def patch_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.kube.patch(self.path, {"spec": spec})

    def pods(self) -> list[dict[str, Any]]:
        return self.kube.items(f"/api/v1/namespaces/{self.namespace}/pods", f"ftso.dev/service={self.name}")

    def live_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(f"/api/v1/namespaces/{self.namespace}/pods/{name}")

    def wait_ready(self, timeout: float = 90) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            body = self.get()
            status = (body or {}).get("status") or {}
            generation = (body or {}).get("metadata", {}).get("generation")
            if condition(body, "Ready") == "True" and status.get("observedGeneration") == generation:
                return status
            return None

        return wait_for(ready, timeout=timeout, what=f"{self.name} Ready (status: {self._summary()})")

    def _summary(self) -> str:
        status = self.status()
        return f"phase={status.get('phase')} primary={status.get('primary')} pods={[(p['name'], p['health']) for p in status.get('pods', [])]}"

    def pod_ip(self, name: str) -> str:
        return str(((self.pod(name) or {}).get("status") or {}).get("podIP") or "")

    def routed(self, service: str) -> set[str]:
        return ready_endpoint_ips(self.kube, self.namespace, service)

    def primary_routed_exactly(self) -> str | None:
        """The primary's name once `<name>-primary` routes to it and to nothing else."""
        primary = self.status().get("primary")
        if not primary:
            return None
        ip = self.pod_ip(primary)
        return primary if ip and self.routed(f"{self.name}-primary") == {ip} else None

    def events(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.kube.items(f"/api/v1/namespaces/{self.namespace}/events")
            if e.get("involvedObject", {}).get("name") == self.name
        ]

    def wait_event(self, reason: str, timeout: float = 30) -> None:
        """The operator posts a reconcile's Events last, after its status write and its actions: whatever a
        test saw in status may be there before the Event is."""
        wait_for(
            lambda: reason in [e["reason"] for e in self.events()], timeout=timeout, what=f"a {reason} Event"
        )


def create_gateway(kube: Kube, namespace: str, name: str = "web") -> None:
    """A Gateway for spec.traffic.gatewayRef; no controller serves its class here."""
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {
            "gatewayClassName": "example",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }
    kube.create(f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/gateways", body)
