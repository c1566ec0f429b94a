"""Fault injection on the kwok cluster, through the chaos stages `e2e/cluster/up.sh` installs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from e2e.kube import Kube, condition, wait_for

# How long a fault may take to show in the API (a kwok stage's delay, a deletion's propagation).
TAKES_EFFECT_SECONDS = 30.0

POD_FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
NODE_NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
HEARTBEAT_THIEF = "ftso-e2e-heartbeat-stopper"


def fail_container(kube: Kube, namespace: str, pod: str) -> None:
    """kwok terminates the pod's containers (exit 1) and sets its phase to Failed; returns once the API
    shows it (or the pod is gone already: the operator replaced it)."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
    uid = kube.patch(path, {"metadata": {"labels": {POD_FAIL_LABEL: "true"}}})["metadata"]["uid"]
    wait_for(
        lambda: _failed_or_gone(kube.get(path), uid),
        timeout=TAKES_EFFECT_SECONDS,
        what=f"kwok to fail {pod}'s container",
    )


def _failed_or_gone(pod: dict[str, Any] | None, uid: str) -> bool:
    if pod is None or pod["metadata"]["uid"] != uid:
        return True
    status = pod.get("status") or {}
    return status.get("phase") == "Failed" or any(
        "terminated" in (c.get("state") or {}) or "terminated" in (c.get("lastState") or {})
        for c in status.get("containerStatuses") or []
    )


def make_node_not_ready(kube: Kube, node: str) -> None:
    """kwok turns the node's Ready condition False; returns once the API shows it."""
    kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {NODE_NOT_READY_LABEL: "true"}}})
    wait_for(
        lambda: condition(kube.get(f"/api/v1/nodes/{node}"), "Ready") == "False",
        timeout=TAKES_EFFECT_SECONDS,
        what=f"kwok to make {node} NotReady",
    )


def make_node_ready(kube: Kube, node: str) -> None:
    kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {NODE_NOT_READY_LABEL: None}}})


OUT_OF_SERVICE_TAINT = {
    "key": "node.kubernetes.io/out-of-service",
    "value": "nodeshutdown",
    "effect": "NoExecute",
}


def taint_out_of_service(kube: Kube, node: str) -> None:
    """What an admin does after a non-graceful node shutdown: the proof that the node's pods are stopped."""
    taints = (kube.get(f"/api/v1/nodes/{node}") or {}).get("spec", {}).get("taints") or []
    kube.patch(f"/api/v1/nodes/{node}", {"spec": {"taints": [*taints, OUT_OF_SERVICE_TAINT]}})


def untaint_out_of_service(kube: Kube, node: str) -> None:
    taints = (kube.get(f"/api/v1/nodes/{node}") or {}).get("spec", {}).get("taints") or []
    kept = [t for t in taints if t.get("key") != OUT_OF_SERVICE_TAINT["key"]]
    if kept != taints:
        kube.patch(f"/api/v1/nodes/{node}", {"spec": {"taints": kept}})


def _lease_path(node: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"


def stop_heartbeat(kube: Kube, node: str) -> None:
    """The node's Lease stops being renewed, as when its kubelet dies: we take the Lease for an hour, and
    kwok, like a kubelet, does not renew a Lease another holder holds."""
    taken = kube.patch(
        _lease_path(node), {"spec": {"holderIdentity": HEARTBEAT_THIEF, "leaseDurationSeconds": 3600}}
    )
    assert taken["spec"]["holderIdentity"] == HEARTBEAT_THIEF, taken["spec"]


def resume_heartbeat(kube: Kube, node: str) -> None:
    """Hand the Lease back expired, so kwok takes it over at its next renewal."""
    kube.patch(
        _lease_path(node),
        {"spec": {"leaseDurationSeconds": 40, "renewTime": "2000-01-01T00:00:00.000000Z"}},
    )


def force_delete_pod(kube: Kube, namespace: str, pod: str) -> None:
    """The pod's object is removed at once (grace 0); returns once that pod (its uid) is gone from the API,
    and fails when there was no such pod to delete."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
    before = kube.get(path)
    assert before is not None, f"no pod {namespace}/{pod} to delete"
    uid = before["metadata"]["uid"]
    kube.delete(path, grace=0)
    wait_for(
        lambda: (after := kube.get(path)) is None or after["metadata"]["uid"] != uid,
        timeout=TAKES_EFFECT_SECONDS,
        what=f"{pod} (uid {uid}) gone after its force deletion",
    )


def heal_all_nodes(kube: Kube) -> None:
    for node in kube.items("/api/v1/nodes", "type=kwok"):
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        if NODE_NOT_READY_LABEL in labels:
            make_node_ready(kube, name)
        untaint_out_of_service(kube, name)
        lease = kube.get(_lease_path(name)) or {}
        if (lease.get("spec") or {}).get("holderIdentity") == HEARTBEAT_THIEF:
            resume_heartbeat(kube, name)


# The address kwok gives its nodes in the binary runtime (its --node-name): metrics-server scrapes kwok there.
KWOK_NODE_ADDRESS = {"type": "Hostname", "address": "localhost"}


def restore_node_addresses(kube: Kube) -> None:
    """kwok v0.8.0's stages drop a node's addresses when it comes back from NotReady, and metrics-server
    cannot scrape a node without one (measured: no PodMetrics for 22 minutes of a suite). A kubelet always
    reports its addresses: put back the one kwok gave."""
    for node in kube.items("/api/v1/nodes", "type=kwok"):
        if not (node.get("status") or {}).get("addresses"):
            kube.request(
                "PATCH",
                f"/api/v1/nodes/{node['metadata']['name']}/status",
                body={"status": {"addresses": [KWOK_NODE_ADDRESS]}},
                content_type="application/merge-patch+json",
            )


def make_pod_unready(kube: Kube, namespace: str, pod: str) -> None:
    """The pod stays Running but its Ready condition turns False, as when its readiness probe fails."""
    _set_pod_ready(kube, namespace, pod, False)


def make_pod_ready(kube: Kube, namespace: str, pod: str) -> None:
    """Its readiness probe passes again."""
    _set_pod_ready(kube, namespace, pod, True)


def _set_pod_ready(kube: Kube, namespace: str, pod: str, ready: bool) -> None:
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/status"
    current = kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod}") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {**c, "status": "True" if ready else "False", "lastTransitionTime": now}
        if c.get("type") in ("Ready", "ContainersReady")
        else c
        for c in (current.get("status") or {}).get("conditions") or []
    ]
    patched = kube.request(
        "PATCH",
        path,
        body={"status": {"conditions": conditions}},
        content_type="application/merge-patch+json",
    )
    # A pod without a Ready condition would be patched with nothing: the fault must have happened.
    assert condition(patched, "Ready") == ("True" if ready else "False"), patched.get("status") or {}


def lease_age(kube: Kube, node: str) -> float:
    lease = kube.get(_lease_path(node)) or {}
    renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
    return (datetime.now(UTC) - renewed).total_seconds()
