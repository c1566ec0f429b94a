"""metrics.k8s.io on the local cluster: a real metrics-server scrapes the usage kwok simulates for a pod from
its kwok.x-k8s.io/usage-* annotations (e2e/cluster/up.sh)."""

from __future__ import annotations

from typing import Any

from e2e.fts import FAKE_NODES
from e2e.kube import Kube, pod_ready, wait_for

CPU = "kwok.x-k8s.io/usage-cpu"
MEMORY = "kwok.x-k8s.io/usage-memory"
MI = 2**20
# metrics-server scrapes every 10 s. A new pod's first kwok sample has no CPU time yet and a rate needs two
# more: PodMetrics come 20-40 s after the pod starts (measured), a change shows at the next scrape (6-10 s).
FIRST_METRICS = 90
CHANGE = 30

SUFFIXES = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(text: str) -> float:
    """A Kubernetes quantity as metrics-server writes it (250m, 249871236n, 102400Ki, 104857600)."""
    number = text.rstrip("numkKiMG")
    return float(number) * SUFFIXES[text[len(number) :]]


def usage(kube: Kube, namespace: str, name: str) -> tuple[float, float] | None:
    """The pod's (cores, bytes) in PodMetrics, or None while metrics-server has none for it (404)."""
    metrics = kube.get(f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}")
    if not metrics or not metrics.get("containers"):
        return None
    container: dict[str, Any] = metrics["containers"][0]["usage"]
    return quantity(container["cpu"]), quantity(container["memory"])


def test_pod_metrics_follow_the_usage_annotations(kube: Kube, namespace: str) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    pod = {
        "metadata": {"name": "busy", "annotations": {CPU: "250m", MEMORY: "100Mi"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **FAKE_NODES},
    }
    kube.create(pods, pod)
    wait_for(lambda: pod_ready(kube.get(f"{pods}/busy") or {}), timeout=60, what="the pod Ready")

    def shows(cores: float) -> tuple[float, float] | None:
        seen = usage(kube, namespace, "busy")
        return seen if seen and abs(seen[0] - cores) <= cores * 0.1 and seen[1] == 100 * MI else None

    wait_for(lambda: shows(0.25), timeout=FIRST_METRICS, interval=1, what="PodMetrics of 250m and 100Mi")
    kube.patch(f"{pods}/busy", {"metadata": {"annotations": {CPU: "900m"}}})
    wait_for(lambda: shows(0.9), timeout=CHANGE, interval=1, what="PodMetrics of 900m after the change")
